// Where and how an atomic save writes (POSIX): the symlink rule, the temporary's name, and the
// clean-up of temporaries left by writers that died (a killed save leaves its whole file).
#pragma once
#include <string>  // paths

namespace pypatch {
namespace io {

/// The file a save of `path` replaces: `path` itself, or, when it is a symlink (chain), the
/// file it points to, so the link survives the save (as an editor's save keeps it). A
/// dangling link resolves to its missing target, which the save then creates. Throws IoError
/// ELOOP after 40 links.
std::string resolve_save_target(const std::string& path);

/// `target.tmp.<pid>.<n>`: the temporary a save renames over `target`.
std::string temp_name(const std::string& target, long pid, unsigned n);

/// Best effort, never throws: removes `target.tmp.<pid>.<n>` files next to `target` whose
/// writer is gone: <pid> is not a live process here, and the file's advisory lock (flock,
/// held by every writer from creation to rename) is free, which also protects a live writer
/// in another PID namespace that shares the folder. Returns the number removed.
int remove_stale_temps(const std::string& target);

}  // namespace io
}  // namespace pypatch
