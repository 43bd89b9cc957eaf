// Separate "hosts" for partition tests, built from Linux network namespaces: a hub namespace
// holds a bridge, and every host is a namespace of its own joined to the bridge by a veth
// pair, with `lo` up and one address in a private /24. A host can be cut off from everyone
// (its port on the bridge goes down) or from chosen peers only (blackhole routes on both
// ends), and healed again. The network owns what it made: its destructor deletes every
// namespace, and the links and routes go with them, whether the test passed or not.
//
//        hub namespace: br0
//        ├── port0 ═══ eth0 [ventilator] 10.199.7.1
//        ├── port1 ═══ eth0 [sink]       10.199.7.2
//        └── port2 ═══ eth0 [worker0]    10.199.7.3 ...
//
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`; every `ip` command is
// run by fork/exec with an argument vector, never through a shell.
#pragma once

#include <chrono>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "process.hpp"

namespace taskvent::testing {

/// This machine cannot build a test network (not root, no `ip`, namespaces or bridges
/// refused). The message says why and what is needed; tests skip on it.
class netns_unavailable : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

class test_network {
  public:
    struct host {
        std::string name;      ///< as the test calls it, e.g. "worker0"
        std::string netns;     ///< the namespace's name, unique per test process and network
        std::string address;   ///< IPv4 address on the bridge, e.g. "10.199.7.3"
        std::string hub_port;  ///< the veth end on the bridge, in the hub namespace
    };

    /// Creates the hub namespace and its bridge. The output of every `ip` command goes to
    /// files in `dir`. Throws netns_unavailable when this machine cannot do it.
    explicit test_network(std::filesystem::path dir);
    /// Deletes every namespace made (hosts first, then the hub). Never throws; a namespace
    /// it cannot delete is named on stderr.
    ~test_network();
    test_network(const test_network&) = delete;
    test_network& operator=(const test_network&) = delete;

    /// A new host on the bridge. `name`: lowercase letters, digits and '-', at most 20.
    host add_host(const std::string& name);
    /// The host named `name`; the reference lasts until the next add_host.
    const host& at(const std::string& name) const;

    /// Takes the host's port on the bridge down: nothing reaches it or leaves it, not even
    /// a reset, so peers only learn of the cut from timeouts. heal() brings it back up.
    void cut(const std::string& name);
    void heal(const std::string& name);

    /// Blackhole routes between `name` and each peer, in both namespaces: packets either
    /// way are dropped, while everyone else still reaches both. heal_from() removes them.
    void cut_from(const std::string& name, const std::vector<std::string>& peers);
    void heal_from(const std::string& name, const std::vector<std::string>& peers);

    /// `opts` turned into `ip netns exec <netns> <program> <args...>`. ip enters the
    /// namespace and execs the program without forking, so the child's pid is the
    /// program's, and signals sent to it reach the program.
    spawn_options in_host(const std::string& name, spawn_options opts) const;

    /// run_command inside the host's namespace.
    command_result run_in(const std::string& name,
                          const std::filesystem::path& dir,
                          const std::string& tag,
                          const std::filesystem::path& program,
                          std::vector<std::string> args,
                          std::chrono::milliseconds timeout) const;

  private:
    /// Runs `ip args...`; throws with its stderr when it fails.
    void ip(const std::vector<std::string>& args) const;
    /// The same, but returns a description of the failure instead of throwing.
    std::string try_ip(const std::vector<std::string>& args) const;
    void destroy() noexcept;

    std::filesystem::path dir_;
    std::filesystem::path ip_path_;
    std::string prefix_;  ///< "tvnet<pid>-<seq>": every namespace name starts with it
    std::string hub_;
    bool hub_made_ = false;
    std::vector<host> hosts_;
    std::set<std::pair<std::string, std::string>> blackholes_;  ///< (from, to) host names
};

}  // namespace taskvent::testing
