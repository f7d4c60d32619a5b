// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.os;

public class Build {
    public static final String MANUFACTURER;
    public static final String MODEL;
    static { MANUFACTURER = null; MODEL = null; }

    public static class VERSION {
        public static final String RELEASE;
        public static final int SDK_INT;
        static { RELEASE = null; SDK_INT = 0; }
    }
}
