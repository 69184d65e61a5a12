/*
 * SelectiveScan TensorRT plugin: implementation (see selectiveScanPlugin.h).
 */
#include "selectiveScanPlugin.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <sstream>

using namespace nvinfer1;

namespace mambacsr
{
namespace plugin
{
namespace
{
constexpr char const* kFIELD_DELTA_SOFTPLUS = "delta_softplus";
constexpr char const* kFIELD_ORDER_KIND = "order_kind";
constexpr char const* kFIELD_ORDER_HEIGHT = "order_height";
constexpr char const* kFIELD_ORDER_WIDTH = "order_width";
constexpr char const* kFIELD_ORDER_WINDOWS = "order_windows";
constexpr char const* kFIELD_ORDER_FLAGS = "order_flags";

bool isActivationType(DataType t) noexcept
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

int toScanDtype(DataType t) noexcept
{
    switch (t)
    {
    case DataType::kFLOAT: return MAMBACSR_FLOAT32;
    case DataType::kHALF: return MAMBACSR_FLOAT16;
    case DataType::kBF16: return MAMBACSR_BFLOAT16;
    default: return -1;
    }
}

void logError(std::string const& msg) noexcept
{
    try
    {
        logMessage(ILogger::Severity::kERROR, (std::string("SelectiveScan: ") + msg).c_str());
    }
    catch (...)
    {
        logMessage(ILogger::Severity::kERROR, "SelectiveScan: error (out of memory formatting the message)");
    }
}

// Integer field values of any integer type (the ONNX parser sends kINT32; a serialized engine
// holds what getFieldsToSerialize wrote, also kINT32).
bool readInts(PluginField const& f, std::vector<int64_t>& out, std::string& err)
{
    out.clear();
    if (f.length < 0 || (f.length > 0 && f.data == nullptr))
    {
        err = std::string(f.name) + ": no data";
        return false;
    }
    for (int32_t i = 0; i < f.length; ++i)
    {
        switch (f.type)
        {
        case PluginFieldType::kINT32: out.push_back(static_cast<int32_t const*>(f.data)[i]); break;
        case PluginFieldType::kINT64: out.push_back(static_cast<int64_t const*>(f.data)[i]); break;
        case PluginFieldType::kINT16: out.push_back(static_cast<int16_t const*>(f.data)[i]); break;
        case PluginFieldType::kINT8: out.push_back(static_cast<int8_t const*>(f.data)[i]); break;
        default: err = std::string(f.name) + " must be an integer field (kINT32)"; return false;
        }
    }
    return true;
}

bool toInt32(int64_t v, int32_t& out)
{
    if (v < INT32_MIN || v > INT32_MAX)
    {
        return false;
    }
    out = static_cast<int32_t>(v);
    return true;
}

bool known(int64_t d) noexcept
{
    return d >= 0;
}

bool same(int64_t x, int64_t y) noexcept
{
    return !known(x) || !known(y) || x == y;
}

std::string joined(std::vector<int32_t> const& v)
{
    std::ostringstream s;
    for (size_t i = 0; i < v.size(); ++i)
    {
        s << (i ? "," : "") << v[i];
    }
    return s.str();
}
} // namespace

// ---- parameters --------------------------------------------------------------------------------

std::string SelectiveScanParams::validate() const
{
    if (deltaSoftplus != 0 && deltaSoftplus != 1)
    {
        return "delta_softplus must be 0 or 1";
    }
    if (orderWindows.size() > MAMBACSR_SCAN_MAX_GROUPS || orderFlags.size() > MAMBACSR_SCAN_MAX_GROUPS)
    {
        return "order_windows / order_flags: at most 8 groups";
    }
    if (orderKind == MAMBACSR_ORDER_IDENTITY)
    {
        return {};
    }
    if (orderKind != MAMBACSR_ORDER_WINDOW && orderKind != MAMBACSR_ORDER_CROSS_SCALE)
    {
        return "order_kind must be 0 (identity), 1 (window) or 2 (cross-scale)";
    }
    if (orderWindows.empty() || orderWindows.size() != orderFlags.size())
    {
        return "order_windows and order_flags need one entry per group";
    }
    if (orderHeight <= 0 || orderWidth <= 0)
    {
        return "order_height and order_width must be positive";
    }
    return {};
}

std::string SelectiveScanParams::toOrder(
    int64_t k, int64_t length, mambacsr_scan_order_t& order, bool& isIdentity) const
{
    std::memset(&order, 0, sizeof(order));
    isIdentity = false;
    auto const groups = static_cast<size_t>(k);
    std::ostringstream err;
    if (!orderWindows.empty() && orderWindows.size() != groups)
    {
        err << "order_windows has " << orderWindows.size() << " entries, the scan has K=" << k << " groups";
        return err.str();
    }
    if (!orderFlags.empty() && orderFlags.size() != groups)
    {
        err << "order_flags has " << orderFlags.size() << " entries, the scan has K=" << k << " groups";
        return err.str();
    }
    order.kind = orderKind;
    order.height = orderHeight;
    order.width = orderWidth;
    std::copy(orderWindows.begin(), orderWindows.end(), order.window);
    std::copy(orderFlags.begin(), orderFlags.end(), order.flags);
    if (orderKind == MAMBACSR_ORDER_IDENTITY
        && std::all_of(orderFlags.begin(), orderFlags.end(), [](int32_t f) { return f == 0; }))
    {
        isIdentity = true; // the plain token order, any K
        return {};
    }
    char const* why = mambacsr_order_check(&order, k, length);
    if (why != nullptr)
    {
        err << "scan order (kind " << orderKind << ", " << orderHeight << "x" << orderWidth << ", windows "
            << joined(orderWindows) << ", flags " << joined(orderFlags) << ") does not fit K=" << k
            << ", L=" << length << ": " << why;
        return err.str();
    }
    return {};
}

std::string SelectiveScanParams::describe() const
{
    std::ostringstream s;
    s << "SelectiveScan/1 abi" << MAMBACSR_SCAN_ABI_VERSION << " softplus=" << deltaSoftplus << " order=" << orderKind
      << ":" << orderHeight << "x" << orderWidth << " windows=" << joined(orderWindows)
      << " flags=" << joined(orderFlags);
    return s.str();
}

// ---- plugin ------------------------------------------------------------------------------------

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanParams params)
    : mParams(std::move(params))
{
    initFields();
}

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mParams(other.mParams)
{
    initFields(); // the field collection must point into this object, not the original
}

void SelectiveScanPlugin::initFields()
{
    mFields.clear();
    mFields.emplace_back(kFIELD_DELTA_SOFTPLUS, &mParams.deltaSoftplus, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_KIND, &mParams.orderKind, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_HEIGHT, &mParams.orderHeight, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_WIDTH, &mParams.orderWidth, PluginFieldType::kINT32, 1);
    // Empty lists (identity order without attributes) are left out rather than written with
    // length 0: absent reads back as empty.
    if (!mParams.orderWindows.empty())
    {
        mFields.emplace_back(kFIELD_ORDER_WINDOWS, mParams.orderWindows.data(), PluginFieldType::kINT32,
            static_cast<int32_t>(mParams.orderWindows.size()));
    }
    if (!mParams.orderFlags.empty())
    {
        mFields.emplace_back(kFIELD_ORDER_FLAGS, mParams.orderFlags.data(), PluginFieldType::kINT32,
            static_cast<int32_t>(mParams.orderFlags.size()));
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
    mDescription = mParams.describe();
}

IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new SelectiveScanPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* SelectiveScanPlugin::getPluginName() const noexcept
{
    return kSELECTIVE_SCAN_NAME;
}

char const* SelectiveScanPlugin::getPluginVersion() const noexcept
{
    return kSELECTIVE_SCAN_VERSION;
}

char const* SelectiveScanPlugin::getPluginNamespace() const noexcept
{
    return kSELECTIVE_SCAN_NAMESPACE;
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != kNB_INPUTS || outputTypes == nullptr || inputTypes == nullptr
        || !isActivationType(inputTypes[kU]))
    {
        logError("expects 7 inputs with u of type float32, float16 or bfloat16, and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[kU];
    return 0;
}

int32_t SelectiveScanPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    static constexpr int32_t kRanks[kNB_INPUTS] = {3, 3, 2, 4, 4, 1, 1};
    bool ok = nbInputs == kNB_INPUTS && nbOutputs == 1 && inputs != nullptr && outputs != nullptr;
    for (int32_t i = 0; ok && i < kNB_INPUTS; ++i)
    {
        ok = inputs[i].nbDims == kRanks[i];
    }
    if (!ok)
    {
        logError("expects u/delta of rank 3, A 2, Bs/Cs 4, D/delta_bias 1, and 1 output");
        return -1;
    }
    outputs[0] = inputs[kDELTA]; // y has delta's shape (u may be the shared (B, KC/K, L))
    return 0;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kU: return isActivationType(desc.type);
    case kA:
    case kD:
    case kDELTA_BIAS: return desc.type == DataType::kFLOAT;
    default: return desc.type == inOut[kU].desc.type; // delta, Bs, Cs and y follow u
    }
}

std::string SelectiveScanPlugin::checkTensors(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) const
{
    if (in == nullptr || nbInputs != kNB_INPUTS)
    {
        return "expects 7 inputs (u, delta, A, Bs, Cs, D, delta_bias)";
    }
    if (nbOutputs != 1 || out == nullptr)
    {
        return "expects 1 output";
    }
    Dims const& u = in[kU].dims;
    Dims const& dl = in[kDELTA].dims;
    Dims const& b = in[kB].dims;
    Dims const& y = out[0].dims;
    if (u.nbDims != 3 || dl.nbDims != 3 || b.nbDims != 4 || in[kC].dims.nbDims != 4 || in[kA].dims.nbDims != 2
        || in[kD].dims.nbDims != 1 || in[kDELTA_BIAS].dims.nbDims != 1 || y.nbDims != 3)
    {
        return "ranks must be u/delta/y 3, A 2, Bs/Cs 4, D/delta_bias 1";
    }
    DataType const t = in[kU].type;
    if (!isActivationType(t) || in[kDELTA].type != t || in[kB].type != t || in[kC].type != t || out[0].type != t)
    {
        return "u, delta, Bs, Cs and y must share one type: float32, float16 or bfloat16";
    }
    if (in[kA].type != DataType::kFLOAT || in[kD].type != DataType::kFLOAT || in[kDELTA_BIAS].type != DataType::kFLOAT)
    {
        return "A, D and delta_bias must be float32";
    }
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        if (in[i].format != TensorFormat::kLINEAR)
        {
            return "every tensor must be in linear format";
        }
    }
    if (out[0].format != TensorFormat::kLINEAR)
    {
        return "every tensor must be in linear format";
    }
    int64_t const bt = dl.d[0], kc = dl.d[1], len = dl.d[2], k = b.d[1], n = b.d[2];
    bool ok = true;
    for (int i = 0; i < 4; ++i)
    {
        ok = ok && same(in[kC].dims.d[i], b.d[i]);
    }
    for (int i = 0; i < 3; ++i)
    {
        ok = ok && same(y.d[i], dl.d[i]);
    }
    ok = ok && same(u.d[0], bt) && same(u.d[2], len) && same(b.d[0], bt) && same(b.d[3], len)
        && same(in[kA].dims.d[0], kc) && same(in[kA].dims.d[1], n) && same(in[kD].dims.d[0], kc)
        && same(in[kDELTA_BIAS].dims.d[0], kc);
    if (!ok)
    {
        return "shapes disagree: u (B, KC or KC/K, L), delta/y (B, KC, L), A (KC, N), Bs/Cs (B, K, N, L), "
               "D/delta_bias (KC)";
    }
    if (known(k) && k < 1)
    {
        return "K (Bs dim 1) must be at least 1";
    }
    if (known(n) && (n < 1 || n > MAMBACSR_SCAN_MAX_STATES))
    {
        std::ostringstream s;
        s << "N (Bs dim 2) = " << n << " is outside 1.." << MAMBACSR_SCAN_MAX_STATES << " (the kernel's limit)";
        return s.str();
    }
    if (known(k) && known(kc) && kc % k != 0)
    {
        return "K*C (delta dim 1) must be divisible by K (Bs dim 1)";
    }
    if (known(u.d[1]) && known(kc) && known(k) && u.d[1] != kc && u.d[1] * k != kc)
    {
        return "u dim 1 must be K*C (delta dim 1) or, shared by the K groups, C = K*C / K";
    }
    if (known(k) && known(len))
    {
        mambacsr_scan_order_t order;
        bool identity = false;
        std::string const err = mParams.toOrder(k, len, order, identity);
        if (!err.empty())
        {
            return err;
        }
    }
    return {};
}

int32_t SelectiveScanPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != 1)
        {
            logError("expects 7 inputs and 1 output");
            return -1;
        }
        PluginTensorDesc descs[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            descs[i] = in[i].desc;
        }
        PluginTensorDesc outDesc = out[0].desc;
        std::string err = checkTensors(descs, nbInputs, &outDesc, nbOutputs);
        if (err.empty())
        {
            // The largest shapes of the profile must fit too (wildcards are -1 in desc.dims).
            for (int32_t i = 0; i < kNB_INPUTS; ++i)
            {
                descs[i].dims = in[i].max;
            }
            outDesc.dims = out[0].max;
            err = checkTensors(descs, nbInputs, &outDesc, nbOutputs);
        }
        if (!err.empty())
        {
            logError(err);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("configurePlugin failed: ") + e.what());
    }
    return -1;
}

size_t SelectiveScanPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        if (inputs == nullptr || nbInputs != kNB_INPUTS || inputs[kDELTA].max.nbDims != 3 || inputs[kB].max.nbDims != 4)
        {
            return 0;
        }
        Dims const& dmin = inputs[kDELTA].min;
        Dims const& dopt = inputs[kDELTA].opt;
        Dims const& dmax = inputs[kDELTA].max;
        int64_t const kc = dmax.d[1], k = inputs[kB].max.d[1], n = inputs[kB].max.d[2];
        int const dtype = toScanDtype(inputs[kU].desc.type);
        if (kc < 1 || k < 1 || n < 1 || dtype < 0)
        {
            return 0;
        }
        // The kernel splits sequences into chunks only for small batches, so its workspace need
        // not grow with the batch: take the largest over the profile's batch range. L is fixed by
        // the order's grid in MambaCSR models; a dynamic L is sampled at min/opt/max.
        int64_t const bLo = std::max<int64_t>(1, dmin.nbDims == 3 ? dmin.d[0] : dmax.d[0]);
        int64_t const bHi = std::max<int64_t>(bLo, dmax.d[0]);
        int64_t const bStep = std::max<int64_t>(1, (bHi - bLo) / 4096);
        std::vector<int64_t> lengths{dmax.d[2]};
        for (int64_t l : {dmin.nbDims == 3 ? dmin.d[2] : -1, dopt.nbDims == 3 ? dopt.d[2] : -1})
        {
            if (l > 0 && std::find(lengths.begin(), lengths.end(), l) == lengths.end())
            {
                lengths.push_back(l);
            }
        }
        size_t bytes = 0;
        for (int64_t len : lengths)
        {
            mambacsr_scan_order_t order;
            bool identity = false;
            if (len < 1 || !mParams.toOrder(k, len, order, identity).empty())
            {
                continue;
            }
            for (int64_t bt = bLo;; bt = std::min(bt + bStep, bHi))
            {
                bytes = std::max(bytes,
                    mambacsr_selective_scan_workspace_size(bt, kc, k, n, len, identity ? nullptr : &order, dtype));
                if (bt == bHi)
                {
                    break;
                }
            }
        }
        return bytes;
    }
    catch (std::exception const& e)
    {
        logError(std::string("getWorkspaceSize failed: ") + e.what());
    }
    return 0;
}

char const* SelectiveScanPlugin::getTimingCacheID() noexcept
{
    // Shapes and formats are added by TensorRT; the fields decide the rest. Identical scans
    // (MambaCSR has dozens per model) then share one timing instead of being timed each.
    return mDescription.c_str();
}

char const* SelectiveScanPlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t SelectiveScanPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        std::string err = checkTensors(in, nbInputs, out, nbOutputs);
        if (err.empty())
        {
            for (int32_t i = 0; i < nbInputs && err.empty(); ++i)
            {
                for (int32_t j = 0; j < in[i].dims.nbDims; ++j)
                {
                    if (in[i].dims.d[j] < 0)
                    {
                        err = "input dimensions must be known at run time";
                    }
                }
            }
        }
        if (!err.empty())
        {
            logError(err);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("onShapeChange failed: ") + e.what());
    }
    return -1;
}

int32_t SelectiveScanPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError("enqueue: null descriptors or buffers");
            return -1;
        }
        // TensorRT calls onShapeChange first; checking again costs a few comparisons and keeps a
        // bad call from reaching the GPU.
        std::string err = checkTensors(inputDesc, kNB_INPUTS, outputDesc, 1);
        Dims const& u = inputDesc[kU].dims;
        Dims const& dl = inputDesc[kDELTA].dims;
        Dims const& b = inputDesc[kB].dims;
        mambacsr_scan_order_t order;
        bool identity = false;
        if (err.empty())
        {
            err = mParams.toOrder(b.d[1], dl.d[2], order, identity);
        }
        if (!err.empty())
        {
            logError("enqueue: " + err);
            return -1;
        }
        int64_t const bt = dl.d[0], kc = dl.d[1], len = dl.d[2], k = b.d[1], n = b.d[2];
        int const dtype = toScanDtype(inputDesc[kU].type);
        mambacsr_scan_order_t const* orderPtr = identity ? nullptr : &order;
        // getWorkspaceSize covered every batch of the profile, so this problem's need fits.
        size_t const wsBytes
            = workspace != nullptr ? mambacsr_selective_scan_workspace_size(bt, kc, k, n, len, orderPtr, dtype) : 0;
        int const layout = (u.d[1] != kc) ? MAMBACSR_LAYOUT_U_SHARED : 0;  // y: channel rows, as the ONNX node
        int const status = mambacsr_selective_scan_ordered(inputs[kU], inputs[kDELTA],
            static_cast<float const*>(inputs[kA]), inputs[kB], inputs[kC], static_cast<float const*>(inputs[kD]),
            static_cast<float const*>(inputs[kDELTA_BIAS]), outputs[0], bt, kc, k, n, len, layout, orderPtr, dtype,
            mParams.deltaSoftplus, /*variant=*/0, workspace, wsBytes, stream);
        if (status != MAMBACSR_OK)
        {
            logError(std::string("kernel launch failed: ") + mambacsr_scan_status_string(status));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("enqueue failed: ") + e.what());
    }
    return -1;
}

IPluginV3* SelectiveScanPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

// ---- creator -----------------------------------------------------------------------------------

SelectiveScanPluginCreator::SelectiveScanPluginCreator()
{
    // The ONNX parser passes exactly the attributes named here (ints as kINT32, lists as kINT32
    // arrays); a missing one keeps its default (no order attributes: the identity order).
    mFields.emplace_back(kFIELD_DELTA_SOFTPLUS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_KIND, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_HEIGHT, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_WIDTH, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_ORDER_WINDOWS, nullptr, PluginFieldType::kINT32, MAMBACSR_SCAN_MAX_GROUPS);
    mFields.emplace_back(kFIELD_ORDER_FLAGS, nullptr, PluginFieldType::kINT32, MAMBACSR_SCAN_MAX_GROUPS);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* SelectiveScanPluginCreator::getPluginName() const noexcept
{
    return kSELECTIVE_SCAN_NAME;
}

char const* SelectiveScanPluginCreator::getPluginVersion() const noexcept
{
    return kSELECTIVE_SCAN_VERSION;
}

char const* SelectiveScanPluginCreator::getPluginNamespace() const noexcept
{
    return kSELECTIVE_SCAN_NAMESPACE;
}

PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        SelectiveScanParams params; // defaults: the ONNX attributes' defaults
        std::string err;
        std::vector<int64_t> values;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields && err.empty(); ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                continue;
            }
            int32_t* scalar = nullptr;
            std::vector<int32_t>* list = nullptr;
            if (!std::strcmp(f.name, kFIELD_DELTA_SOFTPLUS))
                scalar = &params.deltaSoftplus;
            else if (!std::strcmp(f.name, kFIELD_ORDER_KIND))
                scalar = &params.orderKind;
            else if (!std::strcmp(f.name, kFIELD_ORDER_HEIGHT))
                scalar = &params.orderHeight;
            else if (!std::strcmp(f.name, kFIELD_ORDER_WIDTH))
                scalar = &params.orderWidth;
            else if (!std::strcmp(f.name, kFIELD_ORDER_WINDOWS))
                list = &params.orderWindows;
            else if (!std::strcmp(f.name, kFIELD_ORDER_FLAGS))
                list = &params.orderFlags;
            else
                continue; // other fields (plugin_version, plugin_namespace, ...) are not ours
            if (!readInts(f, values, err))
            {
                break;
            }
            if (scalar != nullptr)
            {
                if (values.size() != 1 || !toInt32(values[0], *scalar))
                {
                    err = std::string(f.name) + " must be one int32";
                }
            }
            else
            {
                if (values.size() > MAMBACSR_SCAN_MAX_GROUPS)
                {
                    err = std::string(f.name) + ": at most 8 groups";
                    break;
                }
                list->assign(values.size(), 0);
                for (size_t j = 0; j < values.size() && err.empty(); ++j)
                {
                    if (!toInt32(values[j], (*list)[j]))
                    {
                        err = std::string(f.name) + ": value out of int32 range";
                    }
                }
            }
        }
        if (err.empty())
        {
            err = params.validate();
        }
        if (!err.empty())
        {
            logError("createPlugin: " + err);
            return nullptr;
        }
        return new SelectiveScanPlugin(std::move(params));
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace mambacsr
