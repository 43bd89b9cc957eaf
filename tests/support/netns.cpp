#include "netns.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <optional>

namespace taskvent::testing {
namespace {

/// The hosts' /24. It exists only on the hub's bridge and no host has a default route, so
/// it cannot meet the machine's own networks, whatever addresses those use.
constexpr const char* subnet = "10.199.7.";
constexpr const char* prefix_length = "24";
constexpr std::size_t max_hosts = 250;
constexpr std::size_t max_name = 20;
/// An ip command only changes kernel state; this long means something is badly wrong.
constexpr auto ip_timeout = std::chrono::seconds(20);
constexpr const char* bridge = "br0";
/// The host end of every veth pair; each lives in its own namespace, so the name repeats.
constexpr const char* host_link = "eth0";

std::optional<std::filesystem::path> find_ip() {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
        if (::access(p, X_OK) == 0) {
            return std::filesystem::path(p);
        }
    }
    return std::nullopt;
}

bool valid_name(const std::string& name) {
    if (name.empty() || name.size() > max_name || name == "hub") {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
}

std::string first_line(const std::string& s) {
    const auto end = s.find('\n');
    return end == std::string::npos ? s : s.substr(0, end);
}

}  // namespace

test_network::test_network(std::filesystem::path dir) : dir_(std::move(dir)) {
    if (::geteuid() != 0) {
        throw netns_unavailable(
            "needs root: network namespaces, veth pairs and a bridge take CAP_SYS_ADMIN and "
            "CAP_NET_ADMIN; run the partition suite as root");
    }
    const auto found = find_ip();
    if (!found) {
        throw netns_unavailable(
            "needs iproute2's ip (looked in /usr/sbin, /sbin, /usr/bin, /bin); install "
            "iproute2");
    }
    ip_path_ = *found;

    // The pid keeps a leftover of a killed run from colliding with this one; the sequence
    // keeps apart the networks of consecutive tests in one process.
    static std::atomic<unsigned> seq{0};
    prefix_ = fmt::format("tvnet{}-{}", ::getpid(), seq.fetch_add(1));
    hub_ = prefix_ + "-hub";
    if (const auto err = try_ip({"netns", "add", hub_}); !err.empty()) {
        throw netns_unavailable(fmt::format(
            "ip netns add failed ({}): network namespaces need root with CAP_SYS_ADMIN, a "
            "writable /run/netns and a kernel with CONFIG_NET_NS",
            err));
    }
    hub_made_ = true;
    try {
        if (const auto err = try_ip({"-n", hub_, "link", "add", bridge, "type", "bridge"});
            !err.empty()) {
            throw netns_unavailable(
                fmt::format("cannot create a bridge ({}): the kernel needs CONFIG_BRIDGE", err));
        }
        ip({"-n", hub_, "link", "set", bridge, "up"});
        ip({"-n", hub_, "link", "set", "lo", "up"});
    } catch (...) {
        destroy();
        throw;
    }
}

test_network::~test_network() {
    destroy();
}

void test_network::destroy() noexcept {
    // Hosts first: deleting a namespace deletes its end of the veth pair, and with it the
    // port on the bridge. Processes still inside keep a namespace alive, nameless, until
    // they exit; their owners kill them by pid, and PR_SET_PDEATHSIG does if the test dies.
    std::vector<std::string> names;
    for (auto it = hosts_.rbegin(); it != hosts_.rend(); ++it) {
        names.push_back(it->netns);
    }
    if (hub_made_) {
        names.push_back(hub_);
    }
    for (const auto& ns : names) {
        std::string err;
        try {
            err = try_ip({"netns", "del", ns});
        } catch (const std::exception& e) {
            err = e.what();
        }
        if (!err.empty()) {
            std::cerr << "[ netns    ] could not delete namespace " << ns << ": " << err << '\n';
        }
    }
    hosts_.clear();
    blackholes_.clear();
    hub_made_ = false;
}

std::string test_network::try_ip(const std::vector<std::string>& args) const {
    const auto r = run_command(dir_, "ip", ip_path_, args, ip_timeout);
    if (r.status.success()) {
        return {};
    }
    return fmt::format("{}: {}", r.status.describe(), first_line(r.err));
}

void test_network::ip(const std::vector<std::string>& args) const {
    if (const auto err = try_ip(args); !err.empty()) {
        throw std::runtime_error(fmt::format("ip {} failed ({})", fmt::join(args, " "), err));
    }
}

test_network::host test_network::add_host(const std::string& name) {
    if (!valid_name(name)) {
        throw std::invalid_argument("test_network: bad host name '" + name + "'");
    }
    if (std::any_of(hosts_.begin(), hosts_.end(), [&](const host& h) { return h.name == name; })) {
        throw std::invalid_argument("test_network: host '" + name + "' exists");
    }
    if (hosts_.size() >= max_hosts) {
        throw std::length_error("test_network: too many hosts");
    }

    const auto index = hosts_.size();
    host h{.name = name,
           .netns = prefix_ + "-" + name,
           .address = subnet + std::to_string(index + 1),
           .hub_port = "port" + std::to_string(index)};
    ip({"netns", "add", h.netns});
    // Recorded as soon as it exists, so that the destructor deletes it whatever fails next.
    hosts_.push_back(h);

    // Both ends are created where they belong: nothing of ours ever appears in the root
    // namespace, so no name there can collide with anything.
    ip({"-n",
        hub_,
        "link",
        "add",
        h.hub_port,
        "type",
        "veth",
        "peer",
        "name",
        host_link,
        "netns",
        h.netns});
    ip({"-n", hub_, "link", "set", h.hub_port, "master", bridge});
    ip({"-n", hub_, "link", "set", h.hub_port, "up"});
    ip({"-n", h.netns, "addr", "add", h.address + "/" + prefix_length, "dev", host_link});
    ip({"-n", h.netns, "link", "set", host_link, "up"});
    ip({"-n", h.netns, "link", "set", "lo", "up"});
    return h;
}

const test_network::host& test_network::at(const std::string& name) const {
    for (const auto& h : hosts_) {
        if (h.name == name) {
            return h;
        }
    }
    throw std::out_of_range("test_network: no host '" + name + "'");
}

void test_network::cut(const std::string& name) {
    // The host end keeps its address and route (it only loses carrier); packets it sends
    // are dropped at the veth, and the bridge has nowhere to deliver packets for it.
    ip({"-n", hub_, "link", "set", at(name).hub_port, "down"});
}

void test_network::heal(const std::string& name) {
    ip({"-n", hub_, "link", "set", at(name).hub_port, "up"});
}

void test_network::cut_from(const std::string& name, const std::vector<std::string>& peers) {
    // Both directions, as in a real partition. With a route on one side only, the other
    // side's segments would still arrive and be read: a ventilator would go on seeing the
    // heartbeats of workers it can no longer answer, and never declare them dead.
    for (const auto& peer : peers) {
        for (const auto& [from, to] : {std::pair{name, peer}, std::pair{peer, name}}) {
            if (!blackholes_.emplace(from, to).second) {
                continue;
            }
            ip({"-n", at(from).netns, "route", "add", "blackhole", at(to).address + "/32"});
        }
    }
}

void test_network::heal_from(const std::string& name, const std::vector<std::string>& peers) {
    for (const auto& peer : peers) {
        for (const auto& [from, to] : {std::pair{name, peer}, std::pair{peer, name}}) {
            if (blackholes_.erase({from, to}) == 0) {
                continue;
            }
            ip({"-n", at(from).netns, "route", "del", "blackhole", at(to).address + "/32"});
        }
    }
}

spawn_options test_network::in_host(const std::string& name, spawn_options opts) const {
    std::vector<std::string> args = {"netns", "exec", at(name).netns, opts.program.string()};
    args.insert(args.end(), opts.args.begin(), opts.args.end());
    opts.program = ip_path_;
    opts.args = std::move(args);
    return opts;
}

command_result test_network::run_in(const std::string& name,
                                    const std::filesystem::path& dir,
                                    const std::string& tag,
                                    const std::filesystem::path& program,
                                    std::vector<std::string> args,
                                    std::chrono::milliseconds timeout) const {
    spawn_options o;
    o.program = program;
    o.args = std::move(args);
    o = in_host(name, std::move(o));
    return run_command(dir, tag, o.program, std::move(o.args), timeout);
}

}  // namespace taskvent::testing
