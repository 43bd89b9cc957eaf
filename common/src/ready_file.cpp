#include "taskvent/ready_file.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace taskvent {

void write_ready_file(const std::string& path, const std::map<std::string, std::string>& fields) {
    if (path.empty()) {
        return;
    }
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << nlohmann::json(fields).dump() << '\n';
        if (!out) {
            throw std::runtime_error("cannot write ready file " + tmp);
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        throw std::runtime_error("cannot rename ready file to " + path);
    }
}

}  // namespace taskvent
