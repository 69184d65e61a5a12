/*
 * SelectiveScan TensorRT plugin (IPluginV3, name "SelectiveScan", version "1", namespace "mambacsr").
 *
 * Thin glue: shapes, types, formats and the one serialized field `delta_softplus`. All arithmetic
 * is in the shared CUDA kernel (mambacsr_scan.h); enqueue only launches it.
 *
 * Inputs (linear format): 0 u (B, KC, L) T, 1 delta (B, KC, L) T, 2 A (KC, N) float32,
 * 3 Bs (B, K, N, L) T, 4 Cs (B, K, N, L) T, 5 D (KC) float32, 6 delta_bias (KC) float32,
 * with T float32, float16 or bfloat16. Output: 0 y (B, KC, L) T.
 */
#ifndef MAMBACSR_SELECTIVE_SCAN_PLUGIN_H
#define MAMBACSR_SELECTIVE_SCAN_PLUGIN_H

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mambacsr
{
namespace plugin
{

constexpr char const* kSELECTIVE_SCAN_NAME = "SelectiveScan";
constexpr char const* kSELECTIVE_SCAN_VERSION = "1";
constexpr char const* kSELECTIVE_SCAN_NAMESPACE = "mambacsr";

void logMessage(nvinfer1::ILogger::Severity severity, char const* msg) noexcept;

class SelectiveScanPlugin : public nvinfer1::IPluginV3,
                            public nvinfer1::IPluginV3OneCore,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    static constexpr int32_t kNB_INPUTS = 7;
    enum Input : int32_t
    {
        kU = 0,
        kDELTA = 1,
        kA = 2,
        kB = 3,
        kC = 4,
        kD = 5,
        kDELTA_BIAS = 6
    };

    explicit SelectiveScanPlugin(int32_t deltaSoftplus);
    SelectiveScanPlugin(SelectiveScanPlugin const& other);
    SelectiveScanPlugin& operator=(SelectiveScanPlugin const&) = delete;
    ~SelectiveScanPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int32_t deltaSoftplus() const noexcept
    {
        return mDeltaSoftplus;
    }

    // Shape/type checks shared by configurePlugin and onShapeChange; empty string when valid.
    static std::string checkShapes(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs) noexcept;

private:
    void initFields() noexcept;

    int32_t mDeltaSoftplus{1};
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class SelectiveScanPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SelectiveScanPluginCreator();
    ~SelectiveScanPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace mambacsr

#endif // MAMBACSR_SELECTIVE_SCAN_PLUGIN_H
