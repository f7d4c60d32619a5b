// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package org.tensorflow.lite;

import java.nio.ByteBuffer;
import java.util.Map;

public final class Interpreter implements AutoCloseable {
    public Interpreter(ByteBuffer byteBuffer, Options options) { throw new RuntimeException("Stub!"); }
    public String[] getSignatureKeys() { throw new RuntimeException("Stub!"); }
    public Tensor getInputTensorFromSignature(String inputName, String signatureKey) { throw new RuntimeException("Stub!"); }
    public Tensor getOutputTensorFromSignature(String outputName, String signatureKey) { throw new RuntimeException("Stub!"); }
    public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) { throw new RuntimeException("Stub!"); }
    @Override public void close() { throw new RuntimeException("Stub!"); }

    public static class Options {
        public Options() { throw new RuntimeException("Stub!"); }
        public Options setNumThreads(int numThreads) { throw new RuntimeException("Stub!"); }
    }
}
