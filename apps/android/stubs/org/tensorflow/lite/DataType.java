// Compile-time stub of the real API (same signature), only for the CI compile check: tools/check.py. Never shipped.
package org.tensorflow.lite;

public enum DataType { FLOAT32, INT32, UINT8, INT64, STRING, BOOL, INT16, INT8 }
