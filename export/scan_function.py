"""The SelectiveScan contract as an ONNX local function in standard ops.

The exported graph calls `mambacsr.SelectiveScan` (attributes delta_softplus, the scan order
order_kind / order_height / order_width / order_windows / order_flags, plugin_version,
plugin_namespace). The model also carries a FunctionProto of that name whose body computes the
contract in standard ops, so ONNX Runtime (or any runtime) runs the file with no plugin, while
TensorRT >= 10.7 sends the node to our plugin when its creator is registered (DESIGN.md).
The body: the order's index tables by integer arithmetic on the attributes (the same formulas
as ops/csrc/mambacsr_scan_order.h; constant, so runtimes fold them), a GatherElements per input
into token order, an ONNX `Scan` over tokens, and a GatherElements back into storage order.
Everything is computed in float32 whatever the I/O type.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

DOMAIN = "mambacsr"
OP_TYPE = "SelectiveScan"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "mambacsr"
INPUTS = ["u", "delta", "A", "Bs", "Cs", "D", "delta_bias"]
ORDER_ATTRIBUTES = ("order_kind", "order_height", "order_width", "order_windows", "order_flags")


def order_attributes(order) -> dict:
    """Node attributes of a `mambacsr.scan_order.ScanOrder` (one rule for exporter and tests)."""
    return dict(order_kind=int(order.kind), order_height=int(order.height), order_width=int(order.width),
                order_windows=[int(w) for w in order.windows], order_flags=[int(f) for f in order.flags])


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


def _token_order_body(opset: int) -> list:
    """The contract on token-order operands su, sdelta, sB, sC -> y_seq (B, KC, S)."""
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
    rename = {"u": "su", "delta": "sdelta", "Bs": "sB", "Cs": "sC", "y": "y_seq"}
    for node in nodes:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    return nodes


def _attr_const(name: str, attr: str, ints: bool) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [name])
    node.attribute.append(onnx.AttributeProto(name="value_ints" if ints else "value_int", ref_attr_name=attr,
                                              type=onnx.AttributeProto.INTS if ints else onnx.AttributeProto.INT))
    return node


class _Nodes(list):
    """Tiny builder: `op(name, op_type, *inputs, **attrs)` appends a node and returns its output."""

    def op(self, out: str, op_type: str, *inputs: str, **attrs) -> str:
        self.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, name: str, value: int) -> str:
        return self.op(name, "Constant", value=helper.make_tensor(name, TensorProto.INT64, [], [value]))


def _order_nodes(nodes: _Nodes) -> None:
    """src, tgt (K, S) int64: storage index token t of group g reads / writes (-1: virtual),
    from the order attributes and L = u.shape[2]. Mirrors mambacsr_scan_order.h."""
    n = nodes
    for name, attr, ints in (("kind", "order_kind", False), ("H", "order_height", False),
                             ("W", "order_width", False), ("win_l", "order_windows", True),
                             ("flag_l", "order_flags", True)):
        n.append(_attr_const(name, attr, ints))
    one, two, four, five, zero, neg = (n.const(f"c{v}".replace("-", "m"), v) for v in (1, 2, 4, 5, 0, -1))
    n.op("ax1", "Constant", value=helper.make_tensor("ax1", TensorProto.INT64, [1], [1]))
    n.op("u_shape_o", "Shape", "u")
    n.op("L", "Squeeze", n.op("L1", "Slice", "u_shape_o",
                              n.op("s2", "Constant", value=helper.make_tensor("s2", TensorProto.INT64, [1], [2])),
                              n.op("s3", "Constant", value=helper.make_tensor("s3", TensorProto.INT64, [1], [3]))))
    w = n.op("w", "Unsqueeze", n.op("wq_l", "Max", "win_l", one), "ax1")            # (K, 1), >= 1
    f = n.op("f", "Unsqueeze", "flag_l", "ax1")
    cf = n.op("cf", "Equal", n.op("f_mod2", "Mod", f, two), one)
    fl = n.op("fl", "Equal", n.op("f_div2mod2", "Mod", n.op("f_div2", "Div", f, two), two), one)
    is_win = n.op("is_win", "Equal", "kind", one)
    is_cross = n.op("is_cross", "Equal", "kind", two)
    # Sequence lengths: window (K, 1), cross-scale scalar; S = the longest.
    hg = n.op("hg", "Div", n.op("hpad", "Sub", n.op("hpw", "Add", "H", w), one), w)
    wg = n.op("wg", "Div", n.op("wpad", "Sub", n.op("wpw", "Add", "W", w), one), w)
    seq_w = n.op("seq_w", "Mul", n.op("hgwg", "Mul", hg, wg), n.op("ww", "Mul", w, w))
    n_low = n.op("n_low", "Mul", n.op("H2", "Div", "H", two), n.op("W2", "Div", "W", two))
    seq_c = n.op("seq_c", "Mul", n_low, five)
    S = n.op("S", "Where", is_win, n.op("seq_w_max", "ReduceMax", seq_w, keepdims=0),
             n.op("S_cross_or_id", "Where", is_cross, seq_c, "L"))
    t = n.op("t", "Unsqueeze", n.op("t1", "Range", zero, S, one), n.op("ax0", "Constant", value=helper.make_tensor(
        "ax0", TensorProto.INT64, [1], [0])))                                          # (1, S)
    # Identity: t, or L - 1 - t when flipped.
    rev_id = n.op("rev_id", "Sub", n.op("Lm1", "Sub", "L", one), t)
    src_id = n.op("src_id", "Where", fl, rev_id, t)
    # Window.
    hgd, wgd = n.op("hgd", "Max", hg, one), n.op("wgd", "Max", wg, one)
    ok_w = n.op("ok_w", "Less", t, seq_w)
    p = n.op("p_w", "Where", ok_w, n.op("p_w1", "Where", fl, n.op("p_rev", "Sub", n.op("sw1", "Sub", seq_w, one), t), t),
             zero)
    inner = n.op("inner", "Mod", p, w)
    p1 = n.op("p1", "Div", p, w)
    outer = n.op("outer", "Mod", p1, w)
    win = n.op("win", "Div", p1, w)
    row_c = n.op("row_c", "Add", n.op("rc1", "Mul", n.op("rc0", "Mod", win, hgd), w), inner)
    col_c = n.op("col_c", "Add", n.op("cc1", "Mul", n.op("cc0", "Div", win, hgd), w), outer)
    row_r = n.op("row_r", "Add", n.op("rr1", "Mul", n.op("rr0", "Div", win, wgd), w), outer)
    col_r = n.op("col_r", "Add", n.op("cr1", "Mul", n.op("cr0", "Mod", win, wgd), w), inner)
    row = n.op("row_w", "Where", cf, row_c, row_r)
    col = n.op("col_w", "Where", cf, col_c, col_r)
    inside = n.op("inside", "And", n.op("in_h", "Less", row, "H"), n.op("in_w", "Less", col, "W"))
    src_w = n.op("src_w", "Where", n.op("ok_w2", "And", ok_w, inside),
                 n.op("rw", "Add", n.op("rowW", "Mul", row, "W"), col), neg)
    # Cross-scale.
    half = n.op("half", "Max", n.op("half0", "Div", w, two), one)
    hgc = n.op("hgc", "Max", n.op("hgc0", "Div", "H", w), one)
    wgc = n.op("wgc", "Max", n.op("wgc0", "Div", "W", w), one)
    ok_c = n.op("ok_c", "Less", t, seq_c)
    j0 = n.op("j0", "Div", t, five)
    r = n.op("r", "Mod", t, five)
    j = n.op("j", "Where", ok_c, n.op("j1", "Where", fl, n.op("jrev", "Sub", n.op("nl1", "Sub", n_low, one), j0), j0), zero)
    b1 = n.op("b1", "Mod", j, half)
    j2 = n.op("j2", "Div", j, half)
    a1 = n.op("a1", "Mod", j2, half)
    winc = n.op("winc", "Div", j2, half)
    gh = n.op("gh", "Where", cf, n.op("gh_c", "Mod", winc, hgc), n.op("gh_r", "Div", winc, wgc))
    gw = n.op("gw", "Where", cf, n.op("gw_c", "Div", winc, hgc), n.op("gw_r", "Mod", winc, wgc))
    lr = n.op("lr", "Add", n.op("lr0", "Mul", gh, half), n.op("lr1", "Where", cf, b1, a1))
    lc = n.op("lc", "Add", n.op("lc0", "Mul", gw, half), n.op("lc1", "Where", cf, a1, b1))
    low = n.op("low", "Add", n.op("lrW", "Mul", lr, n.op("Wh", "Div", "W", two)), lc)
    i = n.op("i", "Max", n.op("i0", "Where", fl, n.op("i_f", "Sub", four, r), n.op("i_u", "Sub", r, one)), zero)
    a = n.op("a", "Add", n.op("a0", "Mul", a1, two), n.op("a_i", "Div", i, two))
    b = n.op("b", "Add", n.op("b0", "Mul", b1, two), n.op("b_i", "Mod", i, two))
    hrow = n.op("hrow", "Add", n.op("hr0", "Mul", gh, w), n.op("hr1", "Where", cf, b, a))
    hcol = n.op("hcol", "Add", n.op("hc0", "Mul", gw, w), n.op("hc1", "Where", cf, a, b))
    high = n.op("high", "Add", n_low, n.op("hrc", "Add", n.op("hrW", "Mul", hrow, "W"), hcol))
    # Official un-scan for column-first: window index split row-major over (hgc, wgc).
    q0 = n.op("q0", "Div", winc, wgc)
    q1 = n.op("q1", "Mod", winc, wgc)
    qrow = n.op("qrow", "Add", n.op("qr0", "Mul", q1, w), b)
    qcol = n.op("qcol", "Add", n.op("qc0", "Mul", q0, w), a)
    high_t = n.op("high_t", "Add", n_low, n.op("qrc", "Add", n.op("qrH", "Mul", qrow, n.op("hgcw", "Mul", hgc, w)), qcol))
    is_low = n.op("is_low", "Equal", r, zero)
    src_c = n.op("src_c", "Where", ok_c, n.op("src_c0", "Where", is_low, low, high), neg)
    tgt_c = n.op("tgt_c", "Where", ok_c, n.op("tgt_c0", "Where", is_low, low,
                                              n.op("tgt_c1", "Where", cf, high_t, high)), neg)
    n.op("src", "Where", is_win, src_w, n.op("src_ci", "Where", is_cross, src_c, src_id))
    n.op("tgt", "Where", is_win, src_w, n.op("tgt_ci", "Where", is_cross, tgt_c, src_id))


def _gather_nodes(nodes: _Nodes) -> None:
    """Storage -> token order: su, sdelta (B, KC, S), sB, sC (B, K, N, S); position L of each
    padded input is the zero token that src = -1 reads."""
    n = nodes
    n.op("srcL", "Where", n.op("src_virtual", "Less", "src", "c0"), "L", "src")       # (K, S)
    n.op("b_shape_o", "Shape", "Bs")
    n.op("d_shape_o", "Shape", "delta")
    n.op("pads", "Constant", value=helper.make_tensor("pads", TensorProto.INT64, [6], [0, 0, 0, 0, 0, 1]))
    n.op("pads4", "Constant", value=helper.make_tensor("pads4", TensorProto.INT64, [8], [0] * 7 + [1]))
    for name, pads in (("u", "pads"), ("delta", "pads"), ("Bs", "pads4"), ("Cs", "pads4")):
        n.op(f"{name}_p", "Pad", name, pads)
    # u, delta as (B, K or 1, C, L+1); B, C are (B, K, N, L+1) already.
    k_dim = n.op("k_dim", "Slice", "b_shape_o", "ax1", n.op("s2b", "Constant", value=helper.make_tensor(
        "s2b", TensorProto.INT64, [1], [2])))
    bt_dim = n.op("bt_dim", "Slice", "b_shape_o", n.op("s0", "Constant", value=helper.make_tensor(
        "s0", TensorProto.INT64, [1], [0])), "ax1")
    n.op("Lp1", "Unsqueeze", n.op("Lp1s", "Add", "L", "c1"), "ax0")
    kc_dim = n.op("kc_dim", "Slice", "d_shape_o", "ax1", "s2b")
    c_dim = n.op("c_dim", "Div", kc_dim, k_dim)
    n.op("grp_shape", "Concat", bt_dim, k_dim, c_dim, "Lp1", axis=0)
    n.op("u_rows", "Slice", n.op("u_shape_p", "Shape", "u"), "ax1", "s2b")
    n.op("u_grp", "Concat", bt_dim, n.op("u_k", "Div", "u_rows", c_dim), c_dim, "Lp1", axis=0)
    n.op("u4", "Expand", n.op("u4a", "Reshape", "u_p", "u_grp"), "grp_shape")      # shared u: K copies
    n.op("d4", "Reshape", "delta_p", "grp_shape")
    S1 = n.op("S1", "Unsqueeze", "S", "ax0")
    idx = n.op("idx", "Unsqueeze", "srcL", n.op("ax02", "Constant", value=helper.make_tensor(
        "ax02", TensorProto.INT64, [2], [0, 2])))                                         # (1, K, 1, S)
    n.op("idx_uc", "Expand", idx, n.op("uc_shape", "Concat", bt_dim, k_dim, c_dim, S1, axis=0))
    n_dim = n.op("n_dim", "Slice", "b_shape_o", "s2b", n.op("s3b", "Constant", value=helper.make_tensor(
        "s3b", TensorProto.INT64, [1], [3])))
    n.op("idx_bc", "Expand", idx, n.op("bc_shape", "Concat", bt_dim, k_dim, n_dim, S1, axis=0))
    seq_rows = n.op("seq_rows", "Concat", bt_dim, kc_dim, S1, axis=0)
    n.op("su", "Reshape", n.op("su4", "GatherElements", "u4", "idx_uc", axis=3), seq_rows)
    n.op("sdelta", "Reshape", n.op("sd4", "GatherElements", "d4", "idx_uc", axis=3), seq_rows)
    n.op("sB", "GatherElements", "Bs_p", "idx_bc", axis=3)
    n.op("sC", "GatherElements", "Cs_p", "idx_bc", axis=3)
    # The skip term D*u of the body needs u in token order too: su already is.


def _scatter_nodes(nodes: _Nodes) -> None:
    """Token -> storage order: inv (K, L) = the token whose output lands at each position, then
    y = GatherElements(y_seq, inv)."""
    n = nodes
    n.op("kS", "Concat", "k_dim", "S1", axis=0)     # (K, S) even when the attributes broadcast
    n.op("tgtL", "Expand", n.op("tgtL0", "Where", n.op("tgt_virtual", "Less", "tgt", "c0"), "L", "tgt"), "kS")
    n.op("t_all", "Expand", "t", "kS")
    n.op("inv0", "ConstantOfShape", n.op("kLp1", "Concat", "k_dim", "Lp1", axis=0),
         value=helper.make_tensor("zero_i", TensorProto.INT64, [1], [0]))
    n.op("inv1", "ScatterElements", "inv0", "tgtL", "t_all", axis=1)
    n.op("inv", "Slice", "inv1", "s0", n.op("Lv", "Unsqueeze", "L", "ax0"), "ax1")       # (K, L)
    n.op("inv4", "Expand", n.op("inv4a", "Unsqueeze", "inv", "ax02"),
         n.op("y_shape4", "Concat", "bt_dim", "k_dim", "c_dim", "Lv", axis=0))
    n.op("y4", "GatherElements", n.op("yseq4", "Reshape", "y_seq", n.op("yseq_shape", "Concat", "bt_dim", "k_dim",
                                                                       "c_dim", "S1", axis=0)), "inv4", axis=3)
    n.op("y", "Reshape", "y4", n.op("y_shape", "Concat", "bt_dim", "kc_dim", "Lv", axis=0))


def make_function(opset: int) -> onnx.FunctionProto:
    nodes = _Nodes()
    _order_nodes(nodes)
    _gather_nodes(nodes)
    nodes.extend(_token_order_body(opset))
    _scatter_nodes(nodes)
    fn = helper.make_function(DOMAIN, OP_TYPE, INPUTS, ["y"], list(nodes),
                              opset_imports=[helper.make_opsetid("", opset)],
                              attributes=["plugin_version", "plugin_namespace"])
    fn.attribute_proto.append(helper.make_attribute("delta_softplus", 1))
    # Defaults: the identity order (files without order attributes keep their meaning).
    for name, value in (("order_kind", 0), ("order_height", 0), ("order_width", 0),
                        ("order_windows", [1]), ("order_flags", [0])):
        fn.attribute_proto.append(helper.make_attribute(name, value))
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
        doc="Mamba selective scan with grouped B/C, inputs in storage order, the scan order as attributes "
            "(mambacsr contract; see plugins/README.md).",
        inputs=[P("u", "T"), P("delta", "T"), P("A", "F"), P("Bs", "T"), P("Cs", "T"), P("D", "F"),
                P("delta_bias", "F")],
        outputs=[P("y", "T")],
        type_constraints=[("T", [f32, "tensor(float16)"], "activations"), ("F", [f32], "parameters")],
        attributes=[
            OpSchema.Attribute("delta_softplus", helper.make_attribute("delta_softplus", 1), "softplus on delta"),
            OpSchema.Attribute("order_kind", helper.make_attribute("order_kind", 0),
                               "scan order: 0 identity, 1 window, 2 cross-scale (ops/csrc/mambacsr_scan_order.h)"),
            OpSchema.Attribute("order_height", helper.make_attribute("order_height", 0), "token grid height"),
            OpSchema.Attribute("order_width", helper.make_attribute("order_width", 0), "token grid width"),
            OpSchema.Attribute("order_windows", helper.make_attribute("order_windows", [1]), "window per group"),
            OpSchema.Attribute("order_flags", helper.make_attribute("order_flags", [0]),
                               "per group: 1 column-first, 2 flip"),
            OpSchema.Attribute("plugin_version", helper.make_attribute("plugin_version", PLUGIN_VERSION),
                               "TensorRT plugin version"),
            OpSchema.Attribute("plugin_namespace", helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                               "TensorRT plugin namespace"),
        ])
    onnx.defs.register_schema(schema)
