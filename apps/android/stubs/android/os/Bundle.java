// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.os;

public final class Bundle {
    public Bundle() { throw new RuntimeException("Stub!"); }
}
