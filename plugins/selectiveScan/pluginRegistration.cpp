/*
 * Library entry points for dynamically loaded plugin libraries (trtexec --dynamicPlugins,
 * IPluginRegistry::loadLibrary, Python's registry.load_library): getCreators and setLoggerFinder.
 */
#include "selectiveScanPlugin.h"

#include <atomic>

using namespace nvinfer1;

namespace
{
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

namespace mambacsr
{
namespace plugin
{
void logMessage(ILogger::Severity severity, char const* msg) noexcept
{
    ILoggerFinder* finder = gLoggerFinder.load();
    ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(severity, msg);
    }
}
} // namespace plugin
} // namespace mambacsr

#if defined(_WIN32)
#define MAMBACSR_PLUGIN_API __declspec(dllexport)
#else
#define MAMBACSR_PLUGIN_API __attribute__((visibility("default")))
#endif

extern "C" MAMBACSR_PLUGIN_API void setLoggerFinder(ILoggerFinder* finder)
{
    gLoggerFinder.store(finder);
}

extern "C" MAMBACSR_PLUGIN_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static mambacsr::plugin::SelectiveScanPluginCreator selectiveScanCreator;
    static IPluginCreatorInterface* const creators[] = {&selectiveScanCreator};
    nbCreators = 1;
    return creators;
}
