// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.widget;

import android.view.View;

public class TextView extends View {
    public TextView() { throw new RuntimeException("Stub!"); }
    public CharSequence getText() { throw new RuntimeException("Stub!"); }
    public final void setText(CharSequence text) { throw new RuntimeException("Stub!"); }
}
