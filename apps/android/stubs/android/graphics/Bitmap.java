// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.graphics;

public final class Bitmap {
    private Bitmap() { throw new RuntimeException("Stub!"); }
    public static Bitmap createBitmap(int[] colors, int width, int height, Config config) { throw new RuntimeException("Stub!"); }
    public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) { throw new RuntimeException("Stub!"); }

    public enum Config { ALPHA_8, RGB_565, ARGB_4444, ARGB_8888, RGBA_F16, HARDWARE }
}
