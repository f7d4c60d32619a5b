// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.text;

public interface Editable extends CharSequence {
}
