// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package org.tensorflow.lite;

public final class TensorFlowLite {
    private TensorFlowLite() { throw new RuntimeException("Stub!"); }
    public static String runtimeVersion() { throw new RuntimeException("Stub!"); }
}
