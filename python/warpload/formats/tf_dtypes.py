"""TensorFlow's DataType enum (types.proto): each value's name, the warpload dtype its stored bytes are, or why
torch has none."""
from __future__ import annotations

# TF DataType enum (types.proto, formats.md 3.6) -> TF name. Each _REF type (value + 100) is a TF1 graph-only
# reference: a bundle stores values, never references.
TF_DTYPE_NAMES = {
    0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16", 6: "DT_INT8",
    7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64", 10: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8",
    13: "DT_QINT32", 14: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16", 17: "DT_UINT16", 18: "DT_COMPLEX128",
    19: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT", 22: "DT_UINT32", 23: "DT_UINT64", 24: "DT_FLOAT8_E5M2",
    25: "DT_FLOAT8_E4M3FN", 26: "DT_FLOAT8_E4M3FNUZ", 27: "DT_FLOAT8_E4M3B11FNUZ", 28: "DT_FLOAT8_E5M2FNUZ",
    29: "DT_INT4", 30: "DT_UINT4", 31: "DT_INT2", 32: "DT_UINT2", 33: "DT_FLOAT4_E2M1FN",
}
TF_DTYPE_NAMES.update({code + 100: f"{name}_REF" for code, name in list(TF_DTYPE_NAMES.items()) if code})
# TF DataType -> warpload dtype name, for the types whose stored bytes are a torch dtype's bytes: complex
# values are interleaved (re, im) pairs in both, and TF's float8 types are ml_dtypes', bit for bit torch's.
TF_TO_DTYPE = {
    1: "F32", 2: "F64", 3: "I32", 4: "U8", 5: "I16", 6: "I8", 8: "C64", 9: "I64", 10: "BOOL", 14: "BF16",
    17: "U16", 18: "C128", 19: "F16", 22: "U32", 23: "U64", 24: "F8_E5M2", 25: "F8_E4M3", 26: "F8_E4M3FNUZ",
    28: "F8_E5M2FNUZ",
}
DT_STRING = 7
DT_VARIANT = 21  # datasets, iterators: not weights
# Why the other types cannot come back as torch tensors (the words of the one error that names them).
_QUANTIZED = "quantized integers whose range TensorFlow keeps in other tensors"
_UNSUPPORTED_REASONS = {
    0: "no dtype set: a damaged entry", 7: "strings", 11: _QUANTIZED, 12: _QUANTIZED, 13: _QUANTIZED,
    15: _QUANTIZED, 16: _QUANTIZED, 20: "a resource handle, not values",
    27: "torch has no float8_e4m3b11fnuz", 29: "4-bit integers, one a byte; torch has no int4",
    30: "4-bit integers, one a byte; torch has no uint4", 31: "2-bit integers, one a byte; torch has no int2",
    32: "2-bit integers, one a byte; torch has no uint2",
    33: "4-bit floats, one a byte; torch's float4_e2m1fn_x2 packs two a byte",
}
# TF2's object graph (tf.train.Checkpoint, Keras save_weights): the checkpoint's own metadata, always present;
# read_string_tensor reads it.
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def unsupported_reason(tf_dtype: int) -> str:
    """Why a tensor of TF DataType `tf_dtype` has no torch dtype (for a type not in TF_TO_DTYPE)."""
    if tf_dtype in _UNSUPPORTED_REASONS:
        return _UNSUPPORTED_REASONS[tf_dtype]
    if tf_dtype in TF_DTYPE_NAMES:
        return "a reference type, which TensorFlow never saves"
    return "not a DataType TensorFlow defines: a damaged entry or a newer TensorFlow"
