// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.widget;

public class Button extends TextView {
    public Button() { throw new RuntimeException("Stub!"); }
}
