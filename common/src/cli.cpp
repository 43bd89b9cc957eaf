#include "taskvent/cli.hpp"

#include <algorithm>
#include <cctype>
#include <map>

namespace taskvent::cli {

std::string env_name(const std::string& flag) {
    std::string out = "TASKVENT_";
    for (char c : flag) {
        out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
}

void add_log_options(CLI::App& app, log::options& opts) {
    add(app, "log-level", opts.level, "trace, debug, info, warn, error, critical or off");
    const std::map<std::string, log::format> formats{{"text", log::format::text},
                                                     {"json", log::format::json}};
    app.add_option("--log-format", opts.fmt, "text or json (one object per line)")
        ->envname(env_name("log-format"))
        ->transform(CLI::CheckedTransformer(formats, CLI::ignore_case));
}

}  // namespace taskvent::cli
