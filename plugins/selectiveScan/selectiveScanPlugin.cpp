/*
 * SelectiveScan TensorRT plugin: implementation (see selectiveScanPlugin.h).
 */
#include "selectiveScanPlugin.h"

#include "mambacsr_scan.h"

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
    logMessage(ILogger::Severity::kERROR, (std::string("SelectiveScan: ") + msg).c_str());
}
} // namespace

SelectiveScanPlugin::SelectiveScanPlugin(int32_t deltaSoftplus)
    : mDeltaSoftplus(deltaSoftplus ? 1 : 0)
{
    initFields();
}

SelectiveScanPlugin::SelectiveScanPlugin(SelectiveScanPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mDeltaSoftplus(other.mDeltaSoftplus)
{
    initFields(); // the field collection must point into this object, not the original
}

void SelectiveScanPlugin::initFields() noexcept
{
    mFields.clear();
    mFields.emplace_back(kFIELD_DELTA_SOFTPLUS, &mDeltaSoftplus, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
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
    if (nbOutputs != 1 || nbInputs != kNB_INPUTS || !isActivationType(inputTypes[kU]))
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
    if (nbInputs != kNB_INPUTS || nbOutputs != 1 || inputs[kU].nbDims != 3)
    {
        logError("u must be (batch, K*C, L)");
        return -1;
    }
    outputs[0] = inputs[kU];
    return 0;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
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

std::string SelectiveScanPlugin::checkShapes(PluginTensorDesc const* in, int32_t nbInputs) noexcept
{
    if (nbInputs != kNB_INPUTS)
    {
        return "expects 7 inputs (u, delta, A, Bs, Cs, D, delta_bias)";
    }
    Dims const& u = in[kU].dims;
    Dims const& b = in[kB].dims;
    if (u.nbDims != 3 || in[kDELTA].dims.nbDims != 3 || b.nbDims != 4 || in[kC].dims.nbDims != 4
        || in[kA].dims.nbDims != 2 || in[kD].dims.nbDims != 1 || in[kDELTA_BIAS].dims.nbDims != 1)
    {
        return "ranks must be u/delta 3, A 2, Bs/Cs 4, D/delta_bias 1";
    }
    // Dimensions of -1 (unknown at build time) are checked again in onShapeChange.
    auto same = [](int64_t x, int64_t y) { return x < 0 || y < 0 || x == y; };
    int64_t const bt = u.d[0], kc = u.d[1], len = u.d[2], k = b.d[1], n = b.d[2];
    bool ok = true;
    for (int i = 0; i < 3; ++i)
    {
        ok = ok && same(in[kDELTA].dims.d[i], u.d[i]);
    }
    for (int i = 0; i < 4; ++i)
    {
        ok = ok && same(in[kC].dims.d[i], b.d[i]);
    }
    ok = ok && same(b.d[0], bt) && same(b.d[3], len) && same(in[kA].dims.d[0], kc) && same(in[kA].dims.d[1], n)
        && same(in[kD].dims.d[0], kc) && same(in[kDELTA_BIAS].dims.d[0], kc);
    if (!ok)
    {
        return "shapes disagree: u/delta (B, KC, L), A (KC, N), Bs/Cs (B, K, N, L), D/delta_bias (KC)";
    }
    if (k > 0 && kc >= 0 && kc % k != 0)
    {
        return "K*C (u dim 1) must be divisible by K (Bs dim 1)";
    }
    if (n > MAMBACSR_SCAN_MAX_STATES)
    {
        return "N (Bs dim 2) is larger than the kernel supports (64)";
    }
    return {};
}

int32_t SelectiveScanPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1)
    {
        logError("expects 7 inputs and 1 output");
        return -1;
    }
    PluginTensorDesc descs[kNB_INPUTS];
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        descs[i] = in[i].desc;
    }
    std::string const err = checkShapes(descs, nbInputs);
    if (!err.empty())
    {
        logError(err);
        return -1;
    }
    return 0;
}

size_t SelectiveScanPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t SelectiveScanPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    std::string const err = nbOutputs == 1 ? checkShapes(in, nbInputs) : std::string("expects 1 output");
    if (!err.empty())
    {
        logError(err);
        return -1;
    }
    return 0;
}

int32_t SelectiveScanPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& u = inputDesc[kU].dims;
    Dims const& b = inputDesc[kB].dims;
    int const status = mambacsr_selective_scan(inputs[kU], inputs[kDELTA], static_cast<float const*>(inputs[kA]),
        inputs[kB], inputs[kC], static_cast<float const*>(inputs[kD]), static_cast<float const*>(inputs[kDELTA_BIAS]),
        outputs[0], u.d[0], u.d[1], b.d[1], b.d[2], u.d[2], toScanDtype(inputDesc[kU].type), mDeltaSoftplus, stream);
    if (status != MAMBACSR_OK)
    {
        logError(std::string("kernel launch failed: ") + mambacsr_scan_status_string(status));
        return -1;
    }
    return 0;
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
    mFields.emplace_back(kFIELD_DELTA_SOFTPLUS, nullptr, PluginFieldType::kINT32, 1);
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
        int32_t deltaSoftplus = 1; // the ONNX attribute's default
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr || std::strcmp(f.name, kFIELD_DELTA_SOFTPLUS) != 0 || f.data == nullptr || f.length < 1)
            {
                continue; // unknown fields (e.g. parser bookkeeping) are ignored
            }
            switch (f.type)
            {
            case PluginFieldType::kINT32: deltaSoftplus = *static_cast<int32_t const*>(f.data); break;
            case PluginFieldType::kINT64: deltaSoftplus = static_cast<int32_t>(*static_cast<int64_t const*>(f.data)); break;
            case PluginFieldType::kINT8: deltaSoftplus = *static_cast<int8_t const*>(f.data); break;
            case PluginFieldType::kINT16: deltaSoftplus = *static_cast<int16_t const*>(f.data); break;
            default: logError("delta_softplus must be an integer"); return nullptr;
            }
        }
        return new SelectiveScanPlugin(deltaSoftplus);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace plugin
} // namespace mambacsr
