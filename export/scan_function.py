"""The SelectiveScan contract as an ONNX local function in standard ops.

The exported graph calls `mambacsr.SelectiveScan` (attributes delta_softplus, plugin_version,
plugin_namespace). The model also carries a FunctionProto of that name whose body computes
the contract with an ONNX `Scan` over tokens, so ONNX Runtime (or any runtime) runs the file
with no plugin, while TensorRT >= 10.15 sends the node to our plugin because it carries
`plugin_namespace` (DESIGN.md). Everything is computed in float32 whatever the I/O type.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

DOMAIN = "mambacsr"
OP_TYPE = "SelectiveScan"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "mambacsr"
INPUTS = ["u", "delta", "A", "Bs", "Cs", "D", "delta_bias"]


def _scan_body() -> onnx.GraphProto:
    """One token: h = dA*h + dBu; y = sum_n C*h."""
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", ["dA_t", "h_in"], ["decayed"]),
        helper.make_node("Add", ["decayed", "dBu_t"], ["h_out"]),
        helper.make_node("Mul", ["h_out", "C_t"], ["hc"]),
        helper.make_node("ReduceSum", ["hc", "minus_one"], ["y_t"], keepdims=0),
    ]
    minus_one = helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])
    v = lambda name, rank: helper.make_tensor_value_info(name, f32, [None] * rank)  # noqa: E731
    return helper.make_graph(nodes, "selective_scan_step",
                             [v("h_in", 3), v("dA_t", 3), v("dBu_t", 3), v("C_t", 3)],
                             [v("h_out", 3), v("y_t", 2)], initializer=[minus_one])


def make_function(opset: int) -> onnx.FunctionProto:
    f32 = TensorProto.FLOAT
    i64 = lambda name, vals: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals))
    softplus_flag = helper.make_node("Constant", [], ["softplus_flag_i"])
    softplus_flag.attribute.append(onnx.AttributeProto(name="value_int", ref_attr_name="delta_softplus",
                                                       type=onnx.AttributeProto.INT))
    nodes = [
        i64("ax0_2", [0, 2]), i64("ax2", [2]), i64("ax3", [3]), i64("idx0", [0]), i64("idx1", [1]),
        softplus_flag,
        helper.make_node("Cast", ["softplus_flag_i"], ["softplus_flag"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["u"], ["u32"], to=f32),
        helper.make_node("Cast", ["delta"], ["delta32"], to=f32),
        helper.make_node("Cast", ["Bs"], ["B32"], to=f32),
        helper.make_node("Cast", ["Cs"], ["C32"], to=f32),
        # dt = softplus(delta + delta_bias) (or without softplus)
        helper.make_node("Unsqueeze", ["delta_bias", "ax0_2"], ["bias3"]),
        helper.make_node("Add", ["delta32", "bias3"], ["dt_raw"]),
        helper.make_node("Softplus", ["dt_raw"], ["dt_soft"]),
        helper.make_node("Where", ["softplus_flag", "dt_soft", "dt_raw"], ["dt"]),
        # Groups of B and C expanded to every channel: (Bt,K,N,L) -> (Bt,K*C,N,L)
        helper.make_node("Shape", ["u"], ["u_shape"]),
        helper.make_node("Shape", ["Bs"], ["b_shape"]),
        helper.make_node("Gather", ["u_shape", "idx1"], ["kc"], axis=0),
        helper.make_node("Gather", ["b_shape", "idx1"], ["k"], axis=0),
        helper.make_node("Div", ["kc", "k"], ["c"]),
        helper.make_node("Split", ["b_shape"], ["s_bt", "s_k", "s_n", "s_l"], axis=0, num_outputs=4)
        if opset >= 18 else helper.make_node("Split", ["b_shape"], ["s_bt", "s_k", "s_n", "s_l"], axis=0),
        helper.make_node("Concat", ["s_bt", "s_k", "c", "s_n", "s_l"], ["expand_shape"], axis=0),
        helper.make_node("Concat", ["s_bt", "kc", "s_n", "s_l"], ["grouped_shape"], axis=0),
        helper.make_node("Unsqueeze", ["B32", "ax2"], ["B5"]),
        helper.make_node("Expand", ["B5", "expand_shape"], ["B5x"]),
        helper.make_node("Reshape", ["B5x", "grouped_shape"], ["Bc"]),
        helper.make_node("Unsqueeze", ["C32", "ax2"], ["C5"]),
        helper.make_node("Expand", ["C5", "expand_shape"], ["C5x"]),
        helper.make_node("Reshape", ["C5x", "grouped_shape"], ["Cc"]),
        # Token-major operands of the recurrence: (L, Bt, KC, N)
        helper.make_node("Transpose", ["dt"], ["dt_t"], perm=[2, 0, 1]),
        helper.make_node("Transpose", ["u32"], ["u_t"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["dt_t", "ax3"], ["dt_t4"]),
        helper.make_node("Mul", ["dt_t4", "A"], ["dtA"]),
        helper.make_node("Exp", ["dtA"], ["dA"]),
        helper.make_node("Mul", ["dt_t", "u_t"], ["dtu"]),
        helper.make_node("Unsqueeze", ["dtu", "ax3"], ["dtu4"]),
        helper.make_node("Transpose", ["Bc"], ["B_t"], perm=[3, 0, 1, 2]),
        helper.make_node("Mul", ["dtu4", "B_t"], ["dBu"]),
        helper.make_node("Transpose", ["Cc"], ["C_t"], perm=[3, 0, 1, 2]),
        # h0 = zeros(Bt, KC, N)
        helper.make_node("Shape", ["A"], ["a_shape"]),
        helper.make_node("Gather", ["a_shape", "idx1"], ["n"], axis=0),
        helper.make_node("Concat", ["s_bt", "kc", "n"], ["h_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["h_shape"], ["h0"],
                         value=helper.make_tensor("zero", f32, [1], [0.0])),
        helper.make_node("Scan", ["h0", "dA", "dBu", "C_t"], ["h_last", "y_t"], num_scan_inputs=3,
                         body=_scan_body()),
        helper.make_node("Transpose", ["y_t"], ["y_scan"], perm=[1, 2, 0]),
        helper.make_node("Unsqueeze", ["D", "ax0_2"], ["D3"]),
        helper.make_node("Mul", ["D3", "u32"], ["skip"]),
        helper.make_node("Add", ["y_scan", "skip"], ["y32"]),
        helper.make_node("CastLike", ["y32", "u"], ["y"]),
    ]
    fn = helper.make_function(DOMAIN, OP_TYPE, INPUTS, ["y"], nodes,
                              opset_imports=[helper.make_opsetid("", opset)],
                              attributes=["plugin_version", "plugin_namespace"])
    fn.attribute_proto.append(helper.make_attribute("delta_softplus", 1))
    fn.doc_string = "SelectiveScan (mambacsr contract, DESIGN.md) in standard ONNX ops"
    return fn


def register_schema() -> None:
    """Register the op's schema with onnx (once per process): the exporter builds the node from
    it and onnx.checker validates its inputs and attributes."""
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    P = OpSchema.FormalParameter
    f32 = "tensor(float)"
    schema = OpSchema(
        OP_TYPE, DOMAIN, 1,
        doc="Mamba selective scan with grouped B/C (mambacsr contract; see plugins/README.md).",
        inputs=[P("u", "T"), P("delta", "T"), P("A", "F"), P("Bs", "T"), P("Cs", "T"), P("D", "F"),
                P("delta_bias", "F")],
        outputs=[P("y", "T")],
        type_constraints=[("T", [f32, "tensor(float16)"], "activations"), ("F", [f32], "parameters")],
        attributes=[
            OpSchema.Attribute("delta_softplus", helper.make_attribute("delta_softplus", 1), "softplus on delta"),
            OpSchema.Attribute("plugin_version", helper.make_attribute("plugin_version", PLUGIN_VERSION),
                               "TensorRT plugin version"),
            OpSchema.Attribute("plugin_namespace", helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                               "TensorRT plugin namespace"),
        ])
    onnx.defs.register_schema(schema)
