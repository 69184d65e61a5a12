/*
 * plugin_host - drives libmambacsr_plugins.so the way TensorRT does, without TensorRT.
 *
 * The plugin links no TensorRT library: it only implements TensorRT's interface classes. So this
 * host, written against the same public headers, can load it and make the calls TensorRT's
 * plugin registry, ONNX parser, builder and runtime make, in their order:
 *
 *   dlopen -> setLoggerFinder -> getCreators -> find SelectiveScan / "1" / "mambacsr"
 *   build:   createPlugin(kBUILD, fields as the ONNX parser makes them: int attributes kINT32,
 *            int lists kINT32 arrays, strings kCHAR; only the names getFieldNames lists)
 *            -> getNbOutputs, getOutputDataTypes, getOutputShapes (through this host's
 *            IExprBuilder), the supportsFormatCombination search, clone, configurePlugin,
 *            getWorkspaceSize, getTimingCacheID, getFieldsToSerialize -> deep copy
 *   runtime: createPlugin(kRUNTIME, the copy) -> attachToContext -> onShapeChange -> enqueue
 *
 * Usage:
 *   plugin_host contract <libmambacsr_plugins.so> [<libmambacsr_scan.so>]
 *       Every step but enqueue, for valid configurations and for bad ones (which must be refused
 *       with an error, never a crash). No GPU needed. Prints "ok <check>" / "FAIL <check>: why";
 *       exit status 0 only when every check passed.
 *   plugin_host run <libmambacsr_plugins.so> <case_dir>
 *       The whole sequence with enqueue on a CUDA stream, on the inputs in <case_dir> (written by
 *       tests/plugin_host/scan_cases.py: case.txt and raw little-endian arrays). Writes
 *       y_<sabotage>_b<batch>.bin there; the Python test compares them with the float64
 *       reference. A sabotage feeds the plugin doctored inputs (Cs = 0: y = D*u only; the K
 *       groups' Bs/Cs swapped; delta_bias = 0) while the reference keeps the true ones: the
 *       negative controls that the comparison must reject.
 */
#include "NvInferRuntime.h"

#include "mambacsr_scan_order.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// ---- reporting ---------------------------------------------------------------------------------

int gFailures = 0;

bool check(bool ok, std::string const& name, std::string const& why = "")
{
    if (ok)
    {
        std::printf("ok %s\n", name.c_str());
    }
    else
    {
        ++gFailures;
        std::printf("FAIL %s%s%s\n", name.c_str(), why.empty() ? "" : ": ", why.c_str());
    }
    std::fflush(stdout);
    return ok;
}

// ---- logger (TensorRT hands the plugin library its logger through setLoggerFinder) ----------

class HostLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            ++errors;
            last = msg != nullptr ? msg : "";
        }
        if (severity <= Severity::kWARNING)
        {
            std::fprintf(stderr, "[plugin %s] %s\n", severity <= Severity::kERROR ? "E" : "W", msg ? msg : "");
        }
    }
    int errors{0};
    std::string last;
};

class HostLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &logger;
    }
    HostLogger logger;
};

HostLoggerFinder gLoggerFinder;

// ---- dimension expressions (the builder's IExprBuilder) ------------------------------------

class HostDimExpr : public IDimensionExpr
{
public:
    HostDimExpr(bool constant, int64_t value)
    {
        mHostImpl.constant = constant;
        mHostImpl.value = value;
        mImpl = &mHostImpl;
    }

private:
    struct Impl : apiv::VDimensionExpr
    {
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            return constant ? value : -1;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        bool constant{false};
        int64_t value{-1};
    } mHostImpl;
};

class HostExprBuilder : public IExprBuilder
{
public:
    HostExprBuilder()
    {
        mHostImpl.owner = this;
        mImpl = &mHostImpl;
    }
    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mExprs.emplace_back(new HostDimExpr(constant, value));
        return mExprs.back().get();
    }

private:
    struct Impl : apiv::VExprBuilder
    {
        IDimensionExpr const* constant(int64_t value) override
        {
            return owner->make(true, value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            if (!first.isConstant() || !second.isConstant())
            {
                return owner->make(false, -1);
            }
            int64_t const a = first.getConstantValue(), b = second.getConstantValue();
            int64_t v = 0;
            switch (op)
            {
            case DimensionOperation::kSUM: v = a + b; break;
            case DimensionOperation::kPROD: v = a * b; break;
            case DimensionOperation::kMAX: v = std::max(a, b); break;
            case DimensionOperation::kMIN: v = std::min(a, b); break;
            case DimensionOperation::kSUB: v = a - b; break;
            case DimensionOperation::kEQUAL: v = a == b; break;
            case DimensionOperation::kLESS: v = a < b; break;
            case DimensionOperation::kFLOOR_DIV: v = b ? (a / b - ((a % b != 0) && ((a < 0) != (b < 0)))) : 0; break;
            case DimensionOperation::kCEIL_DIV: v = b ? (a + b - 1) / b : 0; break;
            }
            return owner->make(true, v);
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return owner->make(false, -1);
        }
        HostExprBuilder* owner{nullptr};
    } mHostImpl;
    std::deque<std::unique_ptr<HostDimExpr>> mExprs;
};

class HostResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

// ---- the library -----------------------------------------------------------------------------

using SetLoggerFinderFn = void (*)(ILoggerFinder*);
using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);

struct PluginLibrary
{
    void* handle{nullptr};
    IPluginCreatorV3One* creator{nullptr};
};

// What IPluginRegistry::loadLibrary does: dlopen, hand over the logger, collect the creators.
bool loadLibrary(char const* path, PluginLibrary& lib)
{
    lib.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!check(lib.handle != nullptr, "dlopen", lib.handle ? "" : dlerror()))
    {
        return false;
    }
    auto setLogger = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib.handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(lib.handle, "getCreators"));
    check(setLogger != nullptr, "exports setLoggerFinder");
    if (!check(getCreators != nullptr, "exports getCreators"))
    {
        return false;
    }
    // The kernel's C ABI stays inside the library (no clash with libmambacsr_scan.so).
    check(dlsym(lib.handle, "mambacsr_selective_scan_ordered") == nullptr, "kernel symbols are hidden");
    if (setLogger != nullptr)
    {
        setLogger(&gLoggerFinder);
    }
    int32_t nb = -1;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    check(nb == 1 && creators != nullptr, "getCreators returns one creator", "got " + std::to_string(nb));
    for (int32_t i = 0; creators != nullptr && i < nb; ++i)
    {
        IPluginCreatorInterface* c = creators[i];
        if (c == nullptr || std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* v3 = static_cast<IPluginCreatorV3One*>(c);
        if (!std::strcmp(v3->getPluginName(), "SelectiveScan") && !std::strcmp(v3->getPluginVersion(), "1")
            && !std::strcmp(v3->getPluginNamespace(), "mambacsr"))
        {
            lib.creator = v3;
        }
    }
    return check(lib.creator != nullptr, "creator SelectiveScan/1/mambacsr (IPluginCreatorV3One) found");
}

// ---- ONNX attributes and plugin fields ---------------------------------------------------------

struct Attr
{
    enum Kind
    {
        kINT,
        kINTS,
        kSTRING
    } kind;
    std::vector<int32_t> ints;
    std::string str;
};
using Attrs = std::vector<std::pair<std::string, Attr>>;

Attr intAttr(int32_t v)
{
    return Attr{Attr::kINT, {v}, {}};
}
Attr intsAttr(std::vector<int32_t> v)
{
    return Attr{Attr::kINTS, std::move(v), {}};
}
Attr strAttr(std::string s)
{
    return Attr{Attr::kSTRING, {}, std::move(s)};
}

//! Field storage that outlives the call it is passed to (names and bytes are owned).
struct Fields
{
    std::deque<std::string> names;
    std::deque<std::vector<uint8_t>> data;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    void add(std::string const& name, void const* bytes, size_t nbytes, PluginFieldType type, int32_t length)
    {
        names.push_back(name);
        auto const* p = static_cast<uint8_t const*>(bytes);
        data.emplace_back(p, p + nbytes);
        fields.emplace_back(names.back().c_str(), data.back().empty() ? nullptr : data.back().data(), type, length);
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
    }
    void addAttr(std::string const& name, Attr const& a)
    {
        if (a.kind == Attr::kSTRING)
        {
            add(name, a.str.data(), a.str.size(), PluginFieldType::kCHAR, static_cast<int32_t>(a.str.size()));
        }
        else
        {
            add(name, a.ints.data(), a.ints.size() * sizeof(int32_t), PluginFieldType::kINT32,
                static_cast<int32_t>(a.ints.size()));
        }
    }
};

// The ONNX parser's loadFields: for each name in getFieldNames that the node has, one field whose
// type comes from the attribute (INT/INTS -> kINT32, STRING -> kCHAR).
std::unique_ptr<Fields> parserFields(IPluginCreatorV3One* creator, Attrs const& attrs)
{
    auto out = std::make_unique<Fields>();
    PluginFieldCollection const* names = creator->getFieldNames();
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
    {
        for (auto const& kv : attrs)
        {
            if (kv.first == names->fields[i].name)
            {
                out->addAttr(kv.first, kv.second);
            }
        }
    }
    return out;
}

// Every attribute of the node, declared or not (a tolerant reader must ignore what it does not know).
std::unique_ptr<Fields> allFields(Attrs const& attrs)
{
    auto out = std::make_unique<Fields>();
    for (auto const& kv : attrs)
    {
        out->addAttr(kv.first, kv.second);
    }
    return out;
}

size_t fieldTypeSize(PluginFieldType t)
{
    switch (t)
    {
    case PluginFieldType::kFLOAT64:
    case PluginFieldType::kINT64: return 8;
    case PluginFieldType::kFLOAT32:
    case PluginFieldType::kINT32: return 4;
    case PluginFieldType::kFLOAT16:
    case PluginFieldType::kBF16:
    case PluginFieldType::kINT16: return 2;
    case PluginFieldType::kINT8:
    case PluginFieldType::kCHAR:
    case PluginFieldType::kFP8: return 1;
    default: return 0;
    }
}

// What the engine serializer does with getFieldsToSerialize: copy names and bytes out.
std::unique_ptr<Fields> deepCopy(PluginFieldCollection const* fc, std::string& why)
{
    auto out = std::make_unique<Fields>();
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        size_t const size = fieldTypeSize(f.type);
        if (f.name == nullptr || size == 0 || f.length < 0 || (f.length > 0 && f.data == nullptr))
        {
            why = "field " + std::to_string(i) + " cannot be serialized";
            return nullptr;
        }
        out->add(f.name, f.data, size * static_cast<size_t>(f.length), f.type, f.length);
    }
    return out;
}

bool sameFields(Fields const& a, Fields const& b)
{
    if (a.fields.size() != b.fields.size())
    {
        return false;
    }
    for (size_t i = 0; i < a.fields.size(); ++i)
    {
        if (a.names[i] != b.names[i] || a.fields[i].type != b.fields[i].type || a.fields[i].length != b.fields[i].length
            || a.data[i] != b.data[i])
        {
            return false;
        }
    }
    return true;
}

// ---- problems ----------------------------------------------------------------------------------

struct Problem
{
    DataType type{DataType::kFLOAT};
    int64_t batch{1}; // the profile's max batch (and the data's batch)
    int64_t kc{8};
    int64_t k{2};
    int64_t n{16};
    int64_t length{64};
    int64_t uChannels{8}; // kc, or kc / k when u is shared by the groups
    bool dynamicBatch{false};
};

constexpr int32_t kNB_IN = 7;
constexpr int32_t kNB_IO = 8;
enum
{
    kU,
    kDELTA,
    kA,
    kB,
    kC,
    kD,
    kBIAS,
    kY
};

Dims dims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}

//! Shapes of the 7 inputs and the output for a given batch (-1: dynamic).
std::vector<Dims> ioDims(Problem const& p, int64_t batch)
{
    return {dims({batch, p.uChannels, p.length}), dims({batch, p.kc, p.length}), dims({p.kc, p.n}),
        dims({batch, p.k, p.n, p.length}), dims({batch, p.k, p.n, p.length}), dims({p.kc}), dims({p.kc}),
        dims({batch, p.kc, p.length})};
}

std::vector<DataType> ioTypes(DataType t)
{
    return {t, t, DataType::kFLOAT, t, t, DataType::kFLOAT, DataType::kFLOAT, t};
}

std::vector<PluginTensorDesc> runtimeDescs(Problem const& p, int64_t batch)
{
    std::vector<Dims> const d = ioDims(p, batch);
    std::vector<DataType> const t = ioTypes(p.type);
    std::vector<PluginTensorDesc> out(kNB_IO);
    for (int i = 0; i < kNB_IO; ++i)
    {
        out[i].dims = d[i];
        out[i].type = t[i];
        out[i].format = TensorFormat::kLINEAR;
        out[i].scale = 1.F;
    }
    return out;
}

std::vector<DynamicPluginTensorDesc> buildDescs(Problem const& p)
{
    std::vector<Dims> const net = ioDims(p, p.dynamicBatch ? -1 : p.batch);
    std::vector<Dims> const mn = ioDims(p, p.dynamicBatch ? 1 : p.batch);
    std::vector<Dims> const mx = ioDims(p, p.batch);
    std::vector<DataType> const t = ioTypes(p.type);
    std::vector<DynamicPluginTensorDesc> out(kNB_IO);
    for (int i = 0; i < kNB_IO; ++i)
    {
        out[i].desc.dims = net[i];
        out[i].desc.type = t[i];
        out[i].desc.format = TensorFormat::kLINEAR;
        out[i].desc.scale = 1.F;
        out[i].min = mn[i];
        out[i].opt = mx[i];
        out[i].max = mx[i];
    }
    return out;
}

// ---- plugin handles ----------------------------------------------------------------------------

struct PluginDeleter
{
    void operator()(IPluginV3* p) const
    {
        delete p; // TensorRT owns and deletes the plugins it creates
    }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

template <typename T>
T* capability(IPluginV3* p, PluginCapabilityType type, char const* kind)
{
    if (p == nullptr)
    {
        return nullptr;
    }
    IPluginCapability* c = p->getCapabilityInterface(type);
    if (c == nullptr || std::strcmp(c->getInterfaceInfo().kind, kind) != 0)
    {
        return nullptr;
    }
    return static_cast<T*>(c);
}

IPluginV3OneCore* core(IPluginV3* p)
{
    return capability<IPluginV3OneCore>(p, PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE");
}
IPluginV3OneBuild* build(IPluginV3* p)
{
    return capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
}
IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
}

std::string typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "f32";
    case DataType::kHALF: return "f16";
    case DataType::kBF16: return "bf16";
    case DataType::kINT8: return "i8";
    case DataType::kINT32: return "i32";
    default: return "t" + std::to_string(static_cast<int>(t));
    }
}

// The builder's format search: every combination of (type, format) per position that the plugin
// accepts, asking position by position with the earlier positions fixed, as TensorRT does.
void searchFormats(IPluginV3OneBuild* b, std::vector<DynamicPluginTensorDesc>& io, int32_t pos,
    std::vector<std::string>& found, int& calls)
{
    static DataType const kTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8,
        DataType::kINT32, DataType::kBOOL, DataType::kINT64};
    static TensorFormat const kFormats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW2, TensorFormat::kHWC8,
        TensorFormat::kCHW4, TensorFormat::kCHW32};
    if (pos == kNB_IO)
    {
        std::string s;
        for (int i = 0; i < kNB_IO; ++i)
        {
            s += (i ? "," : "") + typeName(io[i].desc.type);
        }
        found.push_back(s);
        return;
    }
    for (DataType t : kTypes)
    {
        for (TensorFormat f : kFormats)
        {
            io[pos].desc.type = t;
            io[pos].desc.format = f;
            ++calls;
            if (b->supportsFormatCombination(pos, io.data(), kNB_IN, 1))
            {
                if (f != TensorFormat::kLINEAR)
                {
                    found.push_back("non-linear format accepted at " + std::to_string(pos));
                    continue;
                }
                searchFormats(b, io, pos + 1, found, calls);
            }
        }
    }
}

struct BuildResult
{
    std::unique_ptr<Fields> serialized;
    size_t workspace{0};
    std::string timingId;
};

// The build phase for one problem. Returns false (after reporting) when a step failed.
bool buildPhase(IPluginCreatorV3One* creator, Attrs const& attrs, Problem const& p, std::string const& tag,
    BuildResult& result, bool fullChecks)
{
    std::unique_ptr<Fields> fields = parserFields(creator, attrs);
    PluginPtr plugin(creator->createPlugin("scan_node", &fields->fc, TensorRTPhase::kBUILD));
    if (!check(plugin != nullptr, tag + ": createPlugin(kBUILD) from the parser's fields", gLoggerFinder.logger.last))
    {
        return false;
    }
    IPluginV3OneCore* c = core(plugin.get());
    IPluginV3OneBuild* b = build(plugin.get());
    if (!check(c != nullptr && b != nullptr && runtime(plugin.get()) != nullptr,
            tag + ": core/build/runtime capabilities with their interface kinds"))
    {
        return false;
    }
    check(!std::strcmp(c->getPluginName(), "SelectiveScan") && !std::strcmp(c->getPluginVersion(), "1")
            && !std::strcmp(c->getPluginNamespace(), "mambacsr"),
        tag + ": plugin name/version/namespace");
    check(b->getNbOutputs() == 1, tag + ": getNbOutputs == 1");

    std::vector<DataType> const types = ioTypes(p.type);
    DataType outType = DataType::kINT8;
    check(b->getOutputDataTypes(&outType, 1, types.data(), kNB_IN) == 0 && outType == p.type,
        tag + ": getOutputDataTypes gives u's type");

    // getOutputShapes through the host's expression builder; the batch is one symbolic
    // expression shared by every input when dynamic.
    HostExprBuilder eb;
    IDimensionExpr const* batchExpr = p.dynamicBatch ? eb.make(false, -1) : eb.constant(p.batch);
    std::vector<Dims> const net = ioDims(p, p.batch);
    std::vector<DimsExprs> in(kNB_IN);
    for (int i = 0; i < kNB_IN; ++i)
    {
        in[i].nbDims = net[i].nbDims;
        for (int j = 0; j < net[i].nbDims; ++j)
        {
            bool const isBatch = (i != kA && i != kD && i != kBIAS && j == 0);
            in[i].d[j] = isBatch ? batchExpr : eb.constant(net[i].d[j]);
        }
    }
    DimsExprs outShape{};
    int32_t const rc = b->getOutputShapes(in.data(), kNB_IN, nullptr, 0, &outShape, 1, eb);
    bool shapeOk = rc == 0 && outShape.nbDims == 3 && outShape.d[0] == batchExpr && outShape.d[1]->isConstant()
        && outShape.d[1]->getConstantValue() == p.kc && outShape.d[2]->isConstant()
        && outShape.d[2]->getConstantValue() == p.length;
    check(shapeOk, tag + ": getOutputShapes gives delta's shape (B, KC, L)");

    if (fullChecks)
    {
        std::vector<DynamicPluginTensorDesc> io = buildDescs(p);
        std::vector<std::string> found;
        int calls = 0;
        searchFormats(b, io, 0, found, calls);
        std::vector<std::string> const expected
            = {"f32,f32,f32,f32,f32,f32,f32,f32", "f16,f16,f32,f16,f16,f32,f32,f16", "bf16,bf16,f32,bf16,bf16,f32,f32,bf16"};
        std::string got;
        for (auto const& s : found)
        {
            got += "[" + s + "] ";
        }
        check(found == expected, tag + ": supportsFormatCombination accepts exactly f32/f16/bf16 linear (" + std::to_string(calls) + " queries)", got);
    }

    // The builder configures and times clones; the original stays in the network.
    PluginPtr clone(plugin->clone());
    IPluginV3OneBuild* cb = build(clone.get());
    if (!check(cb != nullptr, tag + ": clone"))
    {
        return false;
    }
    std::vector<DynamicPluginTensorDesc> io = buildDescs(p);
    int const errorsBefore = gLoggerFinder.logger.errors;
    if (!check(cb->configurePlugin(io.data(), kNB_IN, io.data() + kNB_IN, 1) == 0, tag + ": configurePlugin",
            gLoggerFinder.logger.last))
    {
        return false;
    }
    check(gLoggerFinder.logger.errors == errorsBefore, tag + ": configurePlugin logs no error");
    result.workspace = cb->getWorkspaceSize(io.data(), kNB_IN, io.data() + kNB_IN, 1);
    char const* id = cb->getTimingCacheID();
    result.timingId = id != nullptr ? id : "";
    check(!result.timingId.empty(), tag + ": getTimingCacheID", "null: the plugin would be re-timed per layer");
    std::string why;
    IPluginV3OneRuntime* cr = runtime(clone.get());
    result.serialized = deepCopy(cr != nullptr ? cr->getFieldsToSerialize() : nullptr, why);
    return check(result.serialized != nullptr, tag + ": getFieldsToSerialize -> deep copy", why);
}

// The runtime phase up to (not including) enqueue.
PluginPtr runtimePlugin(IPluginCreatorV3One* creator, Fields const& serialized, std::string const& tag,
    std::vector<PluginPtr>& keep)
{
    PluginPtr engine(creator->createPlugin("scan_node", &serialized.fc, TensorRTPhase::kRUNTIME));
    if (!check(engine != nullptr && runtime(engine.get()) != nullptr, tag + ": createPlugin(kRUNTIME) from the copy",
            gLoggerFinder.logger.last))
    {
        return nullptr;
    }
    HostResourceContext ctx;
    PluginPtr attached(runtime(engine.get())->attachToContext(&ctx));
    check(attached != nullptr && runtime(attached.get()) != nullptr, tag + ": attachToContext");
    keep.push_back(std::move(engine));
    return attached;
}

// ---- contract checks (no GPU) ------------------------------------------------------------------

struct Config
{
    std::string tag;
    Problem p;
    Attrs attrs;
};

Attrs orderAttrs(int32_t softplus, int32_t kind, int32_t h, int32_t w, std::vector<int32_t> windows,
    std::vector<int32_t> flags)
{
    return {{"delta_softplus", intAttr(softplus)}, {"order_kind", intAttr(kind)}, {"order_height", intAttr(h)},
        {"order_width", intAttr(w)}, {"order_windows", intsAttr(std::move(windows))},
        {"order_flags", intsAttr(std::move(flags))}, {"plugin_version", strAttr("1")},
        {"plugin_namespace", strAttr("mambacsr")}};
}

Problem problem(DataType t, int64_t batch, int64_t k, int64_t c, int64_t n, int64_t len, bool shared, bool dyn)
{
    Problem p;
    p.type = t;
    p.batch = batch;
    p.k = k;
    p.kc = k * c;
    p.n = n;
    p.length = len;
    p.uChannels = shared ? c : k * c;
    p.dynamicBatch = dyn;
    return p;
}

using WorkspaceFn = size_t (*)(int64_t, int64_t, int64_t, int64_t, int64_t, mambacsr_scan_order_t const*, int);

void contractValid(IPluginCreatorV3One* creator, WorkspaceFn wsFn)
{
    int const C = 8;
    std::vector<Config> configs = {
        {"identity, no order attributes, f32, dynamic batch 1..8, odd L",
            problem(DataType::kFLOAT, 8, 2, C, 16, 4097, false, true), {{"delta_softplus", intAttr(1)}}},
        {"identity, no attributes at all (defaults)", problem(DataType::kFLOAT, 1, 4, C, 16, 4096, false, false), {}},
        {"identity with flips, softplus 0, f16",
            problem(DataType::kHALF, 8, 4, C, 16, 1023, false, true), orderAttrs(0, 0, 0, 0, {0, 0, 0, 0}, {0, 2, 0, 2})},
        {"window w8 +-col/flip on 64x64, bf16, K 4",
            problem(DataType::kBF16, 8, 4, C, 16, 4096, false, true),
            orderAttrs(1, 1, 64, 64, {8, 8, 8, 8}, {0, 1, 2, 3})},
        {"window w8 on a padded 20x28 grid, u shared", problem(DataType::kFLOAT, 2, 2, C, 16, 560, true, false),
            orderAttrs(1, 1, 20, 28, {8, 8}, {0, 3})},
        {"cross-scale w8 on 32x32, K 4", problem(DataType::kFLOAT, 8, 4, C, 16, 1280, false, true),
            orderAttrs(1, 2, 32, 32, {8, 8, 8, 8}, {0, 1, 2, 3})},
        {"cross-scale w8 on 16x32 col-first (official layout), f16, u shared",
            problem(DataType::kHALF, 4, 2, C, 16, 640, true, false), orderAttrs(1, 2, 16, 32, {8, 8}, {1, 2})},
        {"N 64 (the kernel's limit)", problem(DataType::kFLOAT, 1, 2, C, 64, 100, false, false),
            {{"delta_softplus", intAttr(0)}}},
    };
    for (Config const& cfg : configs)
    {
        BuildResult br;
        if (!buildPhase(creator, cfg.attrs, cfg.p, cfg.tag, br, /*fullChecks=*/true))
        {
            continue;
        }
        // Tolerant reader: every node attribute, declared or not (plugin_version as kCHAR ...).
        std::unique_ptr<Fields> all = allFields(cfg.attrs);
        PluginPtr tolerant(creator->createPlugin("scan_node", &all->fc, TensorRTPhase::kBUILD));
        check(tolerant != nullptr, cfg.tag + ": createPlugin ignores undeclared fields (plugin_version kCHAR, ...)");

        std::vector<PluginPtr> keep;
        PluginPtr rt = runtimePlugin(creator, *br.serialized, cfg.tag, keep);
        if (rt == nullptr)
        {
            continue;
        }
        // Round trip: the runtime plugin serializes to the same fields and timing ID.
        std::string why;
        std::unique_ptr<Fields> again = deepCopy(runtime(rt.get())->getFieldsToSerialize(), why);
        check(again != nullptr && sameFields(*again, *br.serialized), cfg.tag + ": serialize -> createPlugin -> serialize is the identity");
        char const* id = build(rt.get()) ? build(rt.get())->getTimingCacheID() : nullptr;
        check(id != nullptr && br.timingId == id, cfg.tag + ": timing cache ID survives the round trip");
        {
            // Control: the comparison can fail. The same node with delta_softplus flipped must
            // serialize differently.
            Attrs flipped = cfg.attrs;
            int32_t sp = 1;
            flipped.erase(std::remove_if(flipped.begin(), flipped.end(),
                              [&](std::pair<std::string, Attr> const& kv) {
                                  if (kv.first == "delta_softplus") sp = kv.second.ints.at(0);
                                  return kv.first == "delta_softplus";
                              }),
                flipped.end());
            flipped.push_back({"delta_softplus", intAttr(1 - sp)});
            std::unique_ptr<Fields> ff = parserFields(creator, flipped);
            PluginPtr other(creator->createPlugin("scan_node", &ff->fc, TensorRTPhase::kBUILD));
            std::unique_ptr<Fields> otherFields
                = other && runtime(other.get()) ? deepCopy(runtime(other.get())->getFieldsToSerialize(), why) : nullptr;
            check(again != nullptr && otherFields != nullptr && !sameFields(*again, *otherFields),
                cfg.tag + ": control: delta_softplus flipped serializes differently");
        }
        // onShapeChange at every batch of the profile, same attached plugin (dynamic batch).
        std::vector<int64_t> batches = cfg.p.dynamicBatch ? std::vector<int64_t>{1, cfg.p.batch, 3} : std::vector<int64_t>{cfg.p.batch};
        for (int64_t bt : batches)
        {
            std::vector<PluginTensorDesc> d = runtimeDescs(cfg.p, bt);
            check(runtime(rt.get())->onShapeChange(d.data(), kNB_IN, d.data() + kNB_IN, 1) == 0,
                cfg.tag + ": onShapeChange batch " + std::to_string(bt), gLoggerFinder.logger.last);
        }
        // Workspace: what the kernel asks for at every batch of the profile fits.
        if (wsFn != nullptr)
        {
            size_t need = 0;
            for (int64_t bt = cfg.p.dynamicBatch ? 1 : cfg.p.batch; bt <= cfg.p.batch; ++bt)
            {
                mambacsr_scan_order_t o{};
                bool identity = true;
                for (auto const& kv : cfg.attrs)
                {
                    if (kv.first == "order_kind") { o.kind = kv.second.ints[0]; identity = identity && o.kind == 0; }
                    if (kv.first == "order_height") o.height = kv.second.ints[0];
                    if (kv.first == "order_width") o.width = kv.second.ints[0];
                    if (kv.first == "order_windows") std::copy(kv.second.ints.begin(), kv.second.ints.end(), o.window);
                    if (kv.first == "order_flags")
                    {
                        std::copy(kv.second.ints.begin(), kv.second.ints.end(), o.flags);
                        for (int32_t f : kv.second.ints) identity = identity && f == 0;
                    }
                }
                int const dt = cfg.p.type == DataType::kFLOAT ? 0 : cfg.p.type == DataType::kHALF ? 1 : 2;
                need = std::max(need, wsFn(bt, cfg.p.kc, cfg.p.k, cfg.p.n, cfg.p.length, identity ? nullptr : &o, dt));
            }
            check(br.workspace == need, cfg.tag + ": getWorkspaceSize is the kernel's largest need over the profile",
                std::to_string(br.workspace) + " vs " + std::to_string(need));
        }
    }
}

// A bad configuration must be refused: non-zero / null / false, an error in the log, no crash.
void refused(bool failed, std::string const& what, int errorsBefore, bool needsLog = true)
{
    bool const logged = gLoggerFinder.logger.errors > errorsBefore;
    check(failed && (logged || !needsLog), "refuses " + what,
        failed ? "no error was logged" : "accepted");
}

void contractRefusals(IPluginCreatorV3One* creator)
{
    HostLogger& log = gLoggerFinder.logger;
    int const C = 8;
    Problem const good = problem(DataType::kFLOAT, 2, 2, C, 16, 4096, false, false);
    Attrs const w8 = orderAttrs(1, 1, 64, 64, {8, 8}, {0, 3});

    // createPlugin: malformed fields.
    auto create = [&](Attrs const& attrs, bool viaParser) {
        std::unique_ptr<Fields> f = viaParser ? parserFields(creator, attrs) : allFields(attrs);
        return PluginPtr(creator->createPlugin("bad", &f->fc, TensorRTPhase::kBUILD));
    };
    struct BadFields
    {
        std::string what;
        Attrs attrs;
    };
    std::vector<BadFields> badFields = {
        {"order_kind 7", orderAttrs(1, 7, 64, 64, {8, 8}, {0, 0})},
        {"9 order windows", orderAttrs(1, 1, 64, 64, {8, 8, 8, 8, 8, 8, 8, 8, 8}, {0, 0, 0, 0, 0, 0, 0, 0, 0})},
        {"delta_softplus 2", {{"delta_softplus", intAttr(2)}}},
        {"delta_softplus as a string", {{"delta_softplus", strAttr("1")}}},
        {"order_height as a list of two", {{"order_kind", intAttr(1)}, {"order_height", intsAttr({64, 64})}}},
        {"window order without windows", {{"order_kind", intAttr(1)}, {"order_height", intAttr(8)}, {"order_width", intAttr(8)}}},
        {"windows and flags of different lengths", orderAttrs(1, 1, 64, 64, {8, 8}, {0})},
        {"window order with a zero grid", orderAttrs(1, 1, 0, 64, {8, 8}, {0, 0})},
    };
    for (auto const& bf : badFields)
    {
        int const e = log.errors;
        PluginPtr p = create(bf.attrs, true);
        refused(p == nullptr, "at createPlugin: " + bf.what, e);
    }
    {
        // Runtime phase: a corrupted serialized field (kFLOAT32 where kINT32 belongs).
        Fields f;
        float const x = 1.F;
        f.add("delta_softplus", &x, sizeof(x), PluginFieldType::kFLOAT32, 1);
        int const e = log.errors;
        PluginPtr p(creator->createPlugin("bad", &f.fc, TensorRTPhase::kRUNTIME));
        refused(p == nullptr, "at createPlugin(kRUNTIME): a float field", e);
    }

    // getOutputDataTypes / getOutputShapes / supportsFormatCombination.
    PluginPtr plugin = create(w8, true);
    if (!check(plugin != nullptr && build(plugin.get()) != nullptr, "refusal tests: a valid plugin"))
    {
        return;
    }
    IPluginV3OneBuild* b = build(plugin.get());
    {
        std::vector<DataType> t = ioTypes(DataType::kINT8);
        DataType out;
        int const e = log.errors;
        refused(b->getOutputDataTypes(&out, 1, t.data(), kNB_IN) != 0, "getOutputDataTypes with u int8", e);
    }
    {
        HostExprBuilder eb;
        std::vector<DimsExprs> in(kNB_IN);
        int const ranks[kNB_IN] = {2, 3, 2, 4, 4, 1, 1}; // u of rank 2
        for (int i = 0; i < kNB_IN; ++i)
        {
            in[i].nbDims = ranks[i];
            for (int j = 0; j < ranks[i]; ++j)
            {
                in[i].d[j] = eb.constant(4);
            }
        }
        DimsExprs out{};
        int const e = log.errors;
        refused(b->getOutputShapes(in.data(), kNB_IN, nullptr, 0, &out, 1, eb) != 0, "getOutputShapes with u of rank 2", e);
        int const e2 = log.errors;
        refused(b->getOutputShapes(in.data(), 6, nullptr, 0, &out, 1, eb) != 0, "getOutputShapes with 6 inputs", e2);
    }
    {
        std::vector<DynamicPluginTensorDesc> io = buildDescs(good);
        io[kU].desc.type = DataType::kFLOAT;
        io[kDELTA].desc.type = DataType::kHALF;
        refused(!b->supportsFormatCombination(kDELTA, io.data(), kNB_IN, 1), "supportsFormatCombination: delta f16 with u f32", 0, false);
        io[kDELTA].desc.type = DataType::kFLOAT;
        io[kA].desc.type = DataType::kHALF;
        refused(!b->supportsFormatCombination(kA, io.data(), kNB_IN, 1), "supportsFormatCombination: A f16", 0, false);
        io[kA].desc.type = DataType::kFLOAT;
        io[kU].desc.format = TensorFormat::kHWC8;
        refused(!b->supportsFormatCombination(kU, io.data(), kNB_IN, 1), "supportsFormatCombination: u HWC8", 0, false);
        refused(!b->supportsFormatCombination(kU, io.data(), 6, 1), "supportsFormatCombination with 6 inputs", 0, false);
        refused(!b->supportsFormatCombination(9, io.data(), kNB_IN, 1), "supportsFormatCombination at position 9", 0, false);
    }

    // configurePlugin / onShapeChange / enqueue with bad tensors.
    struct BadTensors
    {
        std::string what;
        Attrs attrs;
        Problem p;
        std::function<void(std::vector<PluginTensorDesc>&)> edit;
    };
    auto setType = [](int i, DataType t) { return [=](std::vector<PluginTensorDesc>& d) { d[i].type = t; }; };
    std::vector<BadTensors> bad = {
        {"N = 65", {}, problem(DataType::kFLOAT, 2, 2, C, 65, 100, false, false), nullptr},
        {"N = 0", {}, problem(DataType::kFLOAT, 2, 2, C, 0, 100, false, false), nullptr},
        {"delta f16 with u f32", {}, good, setType(kDELTA, DataType::kHALF)},
        {"Bs bf16 with u f16", {}, problem(DataType::kHALF, 2, 2, C, 16, 100, false, false), setType(kB, DataType::kBF16)},
        {"A f16", {}, good, setType(kA, DataType::kHALF)},
        {"y f16 with u f32", {}, good, setType(kY, DataType::kHALF)},
        {"u int8 everywhere", {}, problem(DataType::kINT8, 2, 2, C, 16, 100, false, false), nullptr},
        {"Bs of rank 3", {}, good, [](std::vector<PluginTensorDesc>& d) { d[kB].dims = dims({2, 2, 16}); }},
        {"D of rank 2", {}, good, [](std::vector<PluginTensorDesc>& d) { d[kD].dims = dims({2 * C, 1}); }},
        {"Cs L differs from Bs", {}, good, [](std::vector<PluginTensorDesc>& d) { d[kC].dims.d[3] = 4095; }},
        {"A rows != K*C", {}, good, [](std::vector<PluginTensorDesc>& d) { d[kA].dims.d[0] = 2 * C + 1; }},
        {"K*C not divisible by K", {}, problem(DataType::kFLOAT, 2, 2, C, 16, 100, false, false),
            [](std::vector<PluginTensorDesc>& d) {
                for (int i : {kDELTA, kU, kY}) d[i].dims.d[1] = 17;
                d[kA].dims.d[0] = d[kD].dims.d[0] = d[kBIAS].dims.d[0] = 17;
            }},
        {"u with 3 channels (neither K*C nor C)", {}, good, [](std::vector<PluginTensorDesc>& d) { d[kU].dims.d[1] = 3; }},
        {"window order whose grid is not L", w8, problem(DataType::kFLOAT, 2, 2, C, 16, 4095, false, false), nullptr},
        {"2 order windows for K = 4", w8, problem(DataType::kFLOAT, 2, 4, C, 16, 4096, false, false), nullptr},
        {"cross-scale window 6 not dividing 32", orderAttrs(1, 2, 32, 32, {6, 6}, {0, 0}),
            problem(DataType::kFLOAT, 2, 2, C, 16, 1280, false, false), nullptr},
        {"unknown order flag 4", orderAttrs(1, 1, 64, 64, {8, 8}, {4, 0}), good, nullptr},
        {"identity order with the column-first flag", orderAttrs(1, 0, 0, 0, {0, 0}, {1, 0}), good, nullptr},
        {"identity order with 3 flags for K = 2", orderAttrs(1, 0, 0, 0, {0, 0, 0}, {0, 2, 0}), good, nullptr},
    };
    for (auto const& t : bad)
    {
        PluginPtr p = create(t.attrs, true);
        if (!check(p != nullptr, "(" + t.what + ") createPlugin accepts the fields"))
        {
            continue;
        }
        std::vector<DynamicPluginTensorDesc> io = buildDescs(t.p);
        std::vector<PluginTensorDesc> rt = runtimeDescs(t.p, t.p.batch);
        if (t.edit)
        {
            std::vector<PluginTensorDesc> net(kNB_IO);
            for (int i = 0; i < kNB_IO; ++i) net[i] = io[i].desc;
            t.edit(net);
            t.edit(rt);
            for (int i = 0; i < kNB_IO; ++i)
            {
                io[i].desc = net[i];
                io[i].min = io[i].opt = io[i].max = net[i].dims;
            }
        }
        int e = log.errors;
        refused(build(p.get())->configurePlugin(io.data(), kNB_IN, io.data() + kNB_IN, 1) != 0, "at configurePlugin: " + t.what, e);
        e = log.errors;
        refused(runtime(p.get())->onShapeChange(rt.data(), kNB_IN, rt.data() + kNB_IN, 1) != 0, "at onShapeChange: " + t.what, e);
        // enqueue never reaches the GPU for a bad problem (null buffers stay untouched).
        void const* inputs[kNB_IN] = {};
        void* outputs[1] = {nullptr};
        e = log.errors;
        refused(runtime(p.get())->enqueue(rt.data(), rt.data() + kNB_IN, inputs, outputs, nullptr, nullptr) != 0,
            "at enqueue: " + t.what, e);
    }
    {
        // A wildcard batch at run time, and the wrong number of inputs.
        PluginPtr p = create(w8, true);
        std::vector<PluginTensorDesc> rt = runtimeDescs(good, -1);
        int e = log.errors;
        refused(runtime(p.get())->onShapeChange(rt.data(), kNB_IN, rt.data() + kNB_IN, 1) != 0, "at onShapeChange: batch -1", e);
        std::vector<DynamicPluginTensorDesc> io = buildDescs(good);
        e = log.errors;
        refused(build(p.get())->configurePlugin(io.data(), 6, io.data() + 6, 1) != 0, "at configurePlugin: 6 inputs", e);
        e = log.errors;
        refused(build(p.get())->configurePlugin(io.data(), kNB_IN, io.data() + kNB_IN, 2) != 0, "at configurePlugin: 2 outputs", e);
        // A larger max batch than the data must still pass the checks at the max shapes.
        Problem dyn = good;
        dyn.dynamicBatch = true;
        dyn.batch = 8;
        std::vector<DynamicPluginTensorDesc> io2 = buildDescs(dyn);
        io2[kB].max.d[3] = 4095; // the profile's max disagrees with L
        e = log.errors;
        refused(build(p.get())->configurePlugin(io2.data(), kNB_IN, io2.data() + kNB_IN, 1) != 0,
            "at configurePlugin: profile max shapes that disagree", e);
    }
}

int contractMain(char const* pluginPath, char const* scanPath)
{
    PluginLibrary lib;
    if (!loadLibrary(pluginPath, lib))
    {
        return 1;
    }
    // The kernel library in the same process: the plugin's hidden copy must not clash with it.
    WorkspaceFn wsFn = nullptr;
    if (scanPath != nullptr)
    {
        void* scan = dlopen(scanPath, RTLD_NOW | RTLD_GLOBAL);
        check(scan != nullptr, "dlopen libmambacsr_scan.so beside the plugin", scan ? "" : dlerror());
        if (scan != nullptr)
        {
            wsFn = reinterpret_cast<WorkspaceFn>(dlsym(scan, "mambacsr_selective_scan_workspace_size"));
            check(wsFn != nullptr, "libmambacsr_scan.so exports mambacsr_selective_scan_workspace_size");
        }
    }
    PluginFieldCollection const* names = lib.creator->getFieldNames();
    std::vector<std::string> const expected
        = {"delta_softplus", "order_kind", "order_height", "order_width", "order_windows", "order_flags"};
    bool namesOk = names != nullptr && names->nbFields == static_cast<int32_t>(expected.size());
    for (int32_t i = 0; namesOk && i < names->nbFields; ++i)
    {
        namesOk = names->fields[i].name == expected[i] && names->fields[i].type == PluginFieldType::kINT32;
    }
    check(namesOk, "getFieldNames lists the six int32 attributes");
    contractValid(lib.creator, wsFn);
    contractRefusals(lib.creator);
    std::printf("%d failure(s)\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}

// ---- run: enqueue on the GPU -----------------------------------------------------------------

struct Case
{
    Problem p;
    Attrs attrs;
    std::vector<int64_t> runBatches;
    std::vector<std::string> sabotages;
};

bool readCase(std::string const& dir, Case& c, std::string& why)
{
    std::ifstream f(dir + "/case.txt");
    if (!f)
    {
        why = "no case.txt";
        return false;
    }
    std::string line;
    while (std::getline(f, line))
    {
        std::istringstream s(line);
        std::string key;
        if (!(s >> key) || key[0] == '#')
        {
            continue;
        }
        std::vector<std::string> words;
        for (std::string w; s >> w;)
        {
            words.push_back(w);
        }
        auto ints = [&](size_t from) {
            std::vector<int64_t> v;
            for (size_t i = from; i < words.size(); ++i) v.push_back(std::stoll(words[i]));
            return v;
        };
        if (key == "dtype")
        {
            c.p.type = words.at(0) == "float32" ? DataType::kFLOAT : words.at(0) == "float16" ? DataType::kHALF : DataType::kBF16;
        }
        else if (key == "batch") c.p.batch = ints(0).at(0);
        else if (key == "kc") c.p.kc = ints(0).at(0);
        else if (key == "k") c.p.k = ints(0).at(0);
        else if (key == "n") c.p.n = ints(0).at(0);
        else if (key == "length") c.p.length = ints(0).at(0);
        else if (key == "u_channels") c.p.uChannels = ints(0).at(0);
        else if (key == "dynamic_batch") c.p.dynamicBatch = ints(0).at(0) != 0;
        else if (key == "run_batches") c.runBatches = ints(0);
        else if (key == "sabotage") c.sabotages = words;
        else if (key == "attr_int") c.attrs.push_back({words.at(0), intAttr(static_cast<int32_t>(std::stoll(words.at(1))))});
        else if (key == "attr_ints")
        {
            std::vector<int32_t> v;
            for (int64_t x : ints(1)) v.push_back(static_cast<int32_t>(x));
            c.attrs.push_back({words.at(0), intsAttr(v)});
        }
        else if (key == "attr_string") c.attrs.push_back({words.at(0), strAttr(words.size() > 1 ? words[1] : "")});
        else
        {
            why = "unknown key " + key;
            return false;
        }
    }
    return true;
}

size_t elemSize(DataType t)
{
    return t == DataType::kFLOAT ? 4 : 2;
}

bool readFile(std::string const& path, size_t bytes, std::vector<uint8_t>& out, std::string& why)
{
    std::ifstream f(path, std::ios::binary);
    out.assign(bytes, 0);
    if (!f || !f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(bytes)))
    {
        why = path + ": missing or shorter than " + std::to_string(bytes) + " bytes";
        return false;
    }
    f.peek();
    if (!f.eof())
    {
        why = path + ": longer than " + std::to_string(bytes) + " bytes";
        return false;
    }
    return true;
}

#define CUDA_OK(call, what)                                                                                            \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const _e = (call);                                                                                 \
        if (!check(_e == cudaSuccess, what, cudaGetErrorString(_e)))                                                   \
            return 1;                                                                                                  \
    } while (0)

int runMain(char const* pluginPath, std::string const& dir)
{
    Case c;
    std::string why;
    if (!check(readCase(dir, c, why), "read " + dir + "/case.txt", why))
    {
        return 1;
    }
    Problem const& p = c.p;
    PluginLibrary lib;
    if (!loadLibrary(pluginPath, lib))
    {
        return 1;
    }
    BuildResult br;
    if (!buildPhase(lib.creator, c.attrs, p, "build", br, /*fullChecks=*/false))
    {
        return 1;
    }
    std::printf("workspace %zu bytes\n", br.workspace);

    // Host inputs at the profile's max batch.
    size_t const es = elemSize(p.type);
    std::vector<Dims> const full = ioDims(p, p.batch);
    char const* names[kNB_IN] = {"u", "delta", "A", "Bs", "Cs", "D", "delta_bias"};
    std::vector<std::vector<uint8_t>> host(kNB_IN);
    std::vector<size_t> bytes(kNB_IO);
    for (int i = 0; i < kNB_IO; ++i)
    {
        int64_t count = 1;
        for (int j = 0; j < full[i].nbDims; ++j) count *= full[i].d[j];
        bytes[i] = static_cast<size_t>(count) * ((i == kA || i == kD || i == kBIAS) ? 4 : es);
    }
    for (int i = 0; i < kNB_IN; ++i)
    {
        if (!check(readFile(dir + "/" + names[i] + ".bin", bytes[i], host[i], why), std::string("read ") + names[i], why))
        {
            return 1;
        }
    }

    std::vector<void*> dev(kNB_IO, nullptr);
    for (int i = 0; i < kNB_IO; ++i)
    {
        CUDA_OK(cudaMalloc(&dev[i], bytes[i]), std::string("cudaMalloc ") + (i < kNB_IN ? names[i] : "y"));
    }
    void* workspace = nullptr;
    if (br.workspace > 0)
    {
        CUDA_OK(cudaMalloc(&workspace, br.workspace), "cudaMalloc workspace");
    }
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");

    std::vector<PluginPtr> keep;
    PluginPtr rt = runtimePlugin(lib.creator, *br.serialized, "runtime", keep);
    if (rt == nullptr)
    {
        return 1;
    }
    IPluginV3OneRuntime* r = runtime(rt.get());
    size_t const groupBytes = static_cast<size_t>(p.n * p.length) * es;
    for (std::string const& sabotage : c.sabotages)
    {
        std::vector<std::vector<uint8_t>> in = host;
        if (sabotage == "du_only")
        {
            std::fill(in[kC].begin(), in[kC].end(), 0); // y = D*u: the scan term vanishes
        }
        else if (sabotage == "no_bias")
        {
            std::fill(in[kBIAS].begin(), in[kBIAS].end(), 0);
        }
        else if (sabotage == "swap_groups")
        {
            for (int64_t bt = 0; bt < p.batch && p.k >= 2; ++bt)
            {
                for (int t : {kB, kC})
                {
                    uint8_t* base = in[t].data() + static_cast<size_t>(bt * p.k) * groupBytes;
                    std::swap_ranges(base, base + groupBytes, base + groupBytes);
                }
            }
        }
        else if (sabotage != "none")
        {
            check(false, "sabotage " + sabotage, "unknown");
            continue;
        }
        for (int i = 0; i < kNB_IN; ++i)
        {
            CUDA_OK(cudaMemcpy(dev[i], in[i].data(), bytes[i], cudaMemcpyHostToDevice), "upload");
        }
        std::vector<int64_t> batches = sabotage == "none" ? c.runBatches : std::vector<int64_t>{p.batch};
        for (int64_t bt : batches)
        {
            std::string const tag = sabotage + " batch " + std::to_string(bt);
            std::vector<PluginTensorDesc> d = runtimeDescs(p, bt);
            if (!check(r->onShapeChange(d.data(), kNB_IN, d.data() + kNB_IN, 1) == 0, tag + ": onShapeChange",
                    gLoggerFinder.logger.last))
            {
                continue;
            }
            // Poison the whole output (NaN in every float type) and the workspace.
            CUDA_OK(cudaMemsetAsync(dev[kY], 0xFF, bytes[kY], stream), "poison y");
            if (workspace != nullptr)
            {
                CUDA_OK(cudaMemsetAsync(workspace, 0xFF, br.workspace, stream), "poison workspace");
            }
            void const* inputs[kNB_IN];
            for (int i = 0; i < kNB_IN; ++i) inputs[i] = dev[i];
            void* outputs[1] = {dev[kY]};
            int const rc = r->enqueue(d.data(), d.data() + kNB_IN, inputs, outputs, workspace, stream);
            if (!check(rc == 0, tag + ": enqueue", gLoggerFinder.logger.last))
            {
                continue;
            }
            CUDA_OK(cudaStreamSynchronize(stream), tag + ": kernel ran");
            CUDA_OK(cudaGetLastError(), tag + ": no CUDA error");
            std::vector<uint8_t> y(bytes[kY]);
            CUDA_OK(cudaMemcpy(y.data(), dev[kY], bytes[kY], cudaMemcpyDeviceToHost), "download y");
            // Rows past this batch must still hold the poison: nothing written out of bounds.
            size_t const used = bytes[kY] / static_cast<size_t>(p.batch) * static_cast<size_t>(bt);
            check(std::all_of(y.begin() + static_cast<std::ptrdiff_t>(used), y.end(), [](uint8_t x) { return x == 0xFF; }),
                tag + ": rows past the batch untouched");
            std::string const out = dir + "/y_" + sabotage + "_b" + std::to_string(bt) + ".bin";
            std::ofstream f(out, std::ios::binary);
            f.write(reinterpret_cast<char const*>(y.data()), static_cast<std::streamsize>(used));
            check(f.good(), tag + ": wrote " + out);
        }
    }
    rt.reset();
    keep.clear();
    CUDA_OK(cudaStreamDestroy(stream), "cudaStreamDestroy");
    for (void* ptr : dev)
    {
        CUDA_OK(cudaFree(ptr), "cudaFree");
    }
    if (workspace != nullptr)
    {
        CUDA_OK(cudaFree(workspace), "cudaFree workspace");
    }
    std::printf("%d failure(s)\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc >= 3 && std::string(argv[1]) == "contract")
    {
        return contractMain(argv[2], argc >= 4 ? argv[3] : nullptr);
    }
    if (argc == 4 && std::string(argv[1]) == "run")
    {
        return runMain(argv[2], argv[3]);
    }
    std::fprintf(stderr,
        "usage: %s contract <libmambacsr_plugins.so> [<libmambacsr_scan.so>]\n"
        "       %s run <libmambacsr_plugins.so> <case_dir>\n",
        argv[0], argv[0]);
    return 2;
}
