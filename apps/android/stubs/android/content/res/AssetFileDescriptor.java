// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package android.content.res;

import java.io.Closeable;
import java.io.FileDescriptor;
import java.io.IOException;

public class AssetFileDescriptor implements Closeable {
    private AssetFileDescriptor() { throw new RuntimeException("Stub!"); }
    public FileDescriptor getFileDescriptor() { throw new RuntimeException("Stub!"); }
    public long getStartOffset() { throw new RuntimeException("Stub!"); }
    public long getDeclaredLength() { throw new RuntimeException("Stub!"); }
    public void close() throws IOException { throw new RuntimeException("Stub!"); }
}
