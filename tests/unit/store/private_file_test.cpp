// Files that hold captured packets: the database is created mode 0600 (and so, by SQLite, its -wal and -shm while
// it is open), exclusively, never through a symbolic link; a leftover of the spool's name is reused only when it is
// a regular file of ours. Modes and contents are read back with stat() and plain reads, not through hoptrace.

#include "store/private_file.hpp"
#include "store/database.hpp"

#include <gtest/gtest.h>

#include "temp_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace hoptrace::store {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// The permission bits stat() reports (follows nothing: lstat).
mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
}

std::string contents(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string text;
    std::getline(in, text, '\0');
    return text;
}

// A umask that would leave files group- and world-readable (the usual 022), for the length of a test.
class Umask {
public:
    explicit Umask(mode_t mask) : m_old(::umask(mask)) {}
    Umask(const Umask&) = delete;
    Umask& operator=(const Umask&) = delete;
    ~Umask() { ::umask(m_old); }

private:
    mode_t m_old;
};

TEST(PrivateFile, a_new_database_and_its_wal_and_shm_are_mode_0600) {
    const Umask umask(022);
    const TempDir dir;
    const std::string path = dir.file("capture.db");
    const auto created = create_private_file(path);
    ASSERT_TRUE(created) << created.error();
    EXPECT_TRUE(*created);
    EXPECT_EQ(mode_of(path), 0600U);
    Database db = Database::open(path);
    Point point;
    point.name = "c1:eth0";
    db.add_point(point);  // a write: SQLite has made the -wal and the -shm by now, and keeps them while it is open
    ASSERT_TRUE(fs::exists(path + "-wal"));
    ASSERT_TRUE(fs::exists(path + "-shm"));
    EXPECT_EQ(mode_of(path), 0600U);
    EXPECT_EQ(mode_of(path + "-wal"), 0600U);
    EXPECT_EQ(mode_of(path + "-shm"), 0600U);
}

TEST(PrivateFile, an_existing_file_is_left_as_it_is) {
    const TempDir dir;
    const std::string path = dir.file("existing.db");
    std::ofstream(path) << "keep me";
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    const auto created = create_private_file(path);
    ASSERT_TRUE(created) << created.error();
    EXPECT_FALSE(*created);
    EXPECT_EQ(contents(path), "keep me");
    EXPECT_EQ(mode_of(path), 0640U);
}

TEST(PrivateFile, a_dangling_symlink_is_refused_and_its_target_not_created) {
    const TempDir dir;
    const std::string target = dir.file("elsewhere.db");
    const std::string link = dir.file("planted.db");
    fs::create_symlink(target, link);
    const auto created = create_private_file(link);
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().rfind(link + ": a symbolic link to a file that does not exist", 0), 0U)
        << created.error();
    EXPECT_EQ(created.error().find('\n'), std::string::npos);
    EXPECT_FALSE(fs::exists(target));
    EXPECT_TRUE(fs::is_symlink(link));
}

TEST(PrivateFile, the_spool_is_created_0600_and_a_leftover_of_ours_is_reused_private) {
    const Umask umask(022);
    const TempDir dir;
    const std::string path = dir.file("capture.db-spool");
    {
        auto fd = open_private_for_writing(path);
        ASSERT_TRUE(fd) << fd.error();
    }
    EXPECT_EQ(mode_of(path), 0600U);
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);  // an old 0604
    auto again = open_private_for_writing(path);
    ASSERT_TRUE(again) << again.error();
    EXPECT_EQ(mode_of(path), 0600U);
}

TEST(PrivateFile, a_spool_name_that_is_a_link_fifo_or_second_link_is_refused_and_left_alone) {
    const TempDir dir;
    const std::string victim = dir.file("victim");
    std::ofstream(victim) << "precious";

    const std::string link = dir.file("a.db-spool");
    fs::create_symlink(victim, link);
    auto fd = open_private_for_writing(link);
    ASSERT_FALSE(fd);
    EXPECT_NE(fd.error().find(link + ": exists and is not a file this hoptrace left behind (a symbolic link)"),
              std::string::npos)
        << fd.error();

    const std::string dangling = dir.file("b.db-spool");
    fs::create_symlink(dir.file("nothing-here"), dangling);
    EXPECT_FALSE(open_private_for_writing(dangling));
    EXPECT_FALSE(fs::exists(dir.file("nothing-here")));

    const std::string fifo = dir.file("c.db-spool");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    fd = open_private_for_writing(fifo);  // must not block waiting for a reader
    ASSERT_FALSE(fd);
    EXPECT_NE(fd.error().find("not a regular file"), std::string::npos) << fd.error();

    const std::string hard = dir.file("d.db-spool");
    fs::create_hard_link(victim, hard);
    fd = open_private_for_writing(hard);
    ASSERT_FALSE(fd);
    EXPECT_NE(fd.error().find("2 hard links"), std::string::npos) << fd.error();

    EXPECT_EQ(contents(victim), "precious");
    EXPECT_TRUE(fs::is_symlink(link));
    EXPECT_TRUE(fs::is_fifo(fifo));
}

TEST(PrivateFile, a_leftover_owned_by_someone_else_is_refused) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another user";
    const TempDir dir;
    const std::string path = dir.file("capture.db-spool");
    std::ofstream(path) << "nobody's";
    ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
    const auto fd = open_private_for_writing(path);
    ASSERT_FALSE(fd);
    EXPECT_NE(fd.error().find("owned by uid 65534"), std::string::npos) << fd.error();
    EXPECT_EQ(contents(path), "nobody's");
}

}  // namespace
}  // namespace hoptrace::store
