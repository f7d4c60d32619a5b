// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.widget;

import android.graphics.Bitmap;
import android.view.View;

public class ImageView extends View {
    public ImageView() { throw new RuntimeException("Stub!"); }
    public void setImageBitmap(Bitmap bm) { throw new RuntimeException("Stub!"); }
}
