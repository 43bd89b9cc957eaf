// A fresh private directory under $TMPDIR (or /tmp), for tests, fuzzers and tools.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace taskvent {

/// Creates <parent>/<prefix>-<six random characters> with mode 0700 and returns its path;
/// an empty parent means $TMPDIR, or /tmp. Throws std::system_error when it cannot.
inline std::filesystem::path make_temp_dir(const std::string& prefix,
                                           std::filesystem::path parent = {}) {
    if (parent.empty()) {
        const char* base = std::getenv("TMPDIR");
        parent = base != nullptr && *base != '\0' ? base : "/tmp";
    }
    // mkdtemp replaces the trailing six 'X' characters of the template.
    auto pattern = (parent / (prefix + "-" + std::string(6, 'X'))).string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    }
    return pattern;
}

}  // namespace taskvent
