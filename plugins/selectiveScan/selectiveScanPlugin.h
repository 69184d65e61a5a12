/*
 * SelectiveScan TensorRT plugin (IPluginV3, name "SelectiveScan", version "1", namespace "mambacsr").
 *
 * Thin glue: shapes, types, formats, the scan order and the serialized fields. All arithmetic is
 * in the shared CUDA kernel (mambacsr_scan.h, mambacsr_selective_scan_ordered); enqueue only
 * launches it.
 *
 * Inputs (linear format, storage order): 0 u (B, KC, L), or (B, KC/K, L) shared by the K groups,
 * T; 1 delta (B, KC, L) T; 2 A (KC, N) float32; 3 Bs (B, K, N, L) T; 4 Cs (B, K, N, L) T;
 * 5 D (KC) float32; 6 delta_bias (KC) float32; T float32, float16 or bfloat16.
 * Output: 0 y, delta's shape, T.
 * Fields (ONNX attributes of the node, all int32): delta_softplus, order_kind, order_height,
 * order_width, order_windows[K], order_flags[K] (mambacsr_scan_order.h); a missing order means
 * the identity order.
 */
#ifndef MAMBACSR_SELECTIVE_SCAN_PLUGIN_H
#define MAMBACSR_SELECTIVE_SCAN_PLUGIN_H

#include "NvInferRuntime.h"

#include "mambacsr_scan.h"

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

//! The node's attributes. Lists hold one entry per group, or none (identity order only).
struct SelectiveScanParams
{
    int32_t deltaSoftplus{1};
    int32_t orderKind{MAMBACSR_ORDER_IDENTITY};
    int32_t orderHeight{0};
    int32_t orderWidth{0};
    std::vector<int32_t> orderWindows;
    std::vector<int32_t> orderFlags;

    //! Checks that need no shapes; empty string when valid.
    std::string validate() const;
    //! The kernel's order for K groups and storage length L, checked with mambacsr_order_check;
    //! `isIdentity` is set when the plain token order applies (the kernel then gets NULL).
    std::string toOrder(int64_t k, int64_t length, mambacsr_scan_order_t& order, bool& isIdentity) const;
    //! A stable text of the fields (timing cache ID, metadata).
    std::string describe() const;
};

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

    explicit SelectiveScanPlugin(SelectiveScanParams params);
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
    char const* getTimingCacheID() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    SelectiveScanParams const& params() const noexcept
    {
        return mParams;
    }

    // Shape/type/order checks shared by configurePlugin, onShapeChange and enqueue; empty string
    // when valid. Dimensions of -1 (unknown at build time) pass and are checked again later.
    std::string checkTensors(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) const;

private:
    void initFields();

    SelectiveScanParams mParams;
    std::string mDescription;
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
