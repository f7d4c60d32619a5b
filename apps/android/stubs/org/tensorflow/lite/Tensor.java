// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package org.tensorflow.lite;

public interface Tensor {
    DataType dataType();
    int[] shape();
}
