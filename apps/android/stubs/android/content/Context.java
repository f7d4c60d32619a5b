// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.content;

import android.content.res.AssetManager;
import java.io.File;

public abstract class Context {
    public abstract AssetManager getAssets();
    public abstract File getFilesDir();
    public abstract File getExternalFilesDir(String type);
    public final String getString(int resId, Object... formatArgs) { throw new RuntimeException("Stub!"); }
}
