// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.os;

public final class Debug {
    private Debug() { throw new RuntimeException("Stub!"); }
    public static native void getMemoryInfo(MemoryInfo memoryInfo);

    public static class MemoryInfo {
        public MemoryInfo() { throw new RuntimeException("Stub!"); }
        public int getTotalPss() { throw new RuntimeException("Stub!"); }
    }
}
