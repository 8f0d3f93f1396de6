#pragma once
// The `containers` table: what the engine (docker inspect) said about the container behind a point.

#include "store/database.hpp"
#include "tracer/netns.hpp"

#include <cstdint>
#include <map>

namespace hoptrace::store {

void add_container(Database& db, std::int64_t point_id, const ContainerInfo& info);

// By point id; empty for a file without the table (schema 4) or without container targets.
std::map<std::int64_t, ContainerInfo> containers(const Database& db);

}  // namespace hoptrace::store
