#pragma once
// What the engine set up: the `containers` table (docker inspect about the container behind a point) and the
// `proxies` table (its docker-proxy processes).

#include "store/database.hpp"
#include "tracer/netns.hpp"
#include "tracer/proxies.hpp"

#include <cstdint>
#include <map>
#include <vector>

namespace hoptrace::store {

void add_container(Database& db, std::int64_t point_id, const ContainerInfo& info);

// By point id; empty for a file without the table (schema 4) or without container targets.
std::map<std::int64_t, ContainerInfo> containers(const Database& db);

void add_proxies(Database& db, const std::vector<DockerProxy>& proxies);
// Empty for a file without the table (schema 4) or a capture that saw none.
std::vector<DockerProxy> proxies(const Database& db);

}  // namespace hoptrace::store
