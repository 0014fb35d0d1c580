#include "stepc/file.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace stepc {
namespace {

[[noreturn]] void failWith(const std::string &what, const std::string &path, int error) {
  throw Error(fmt::format("cannot {} '{}': {}", what, path, std::strerror(error)));
}

std::string directoryOf(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace

void writeFileAtomically(const std::string &path,
                         const std::vector<std::string_view> &pieces) {
  static std::atomic<uint64_t> counter{0};
  std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    failWith("write", tmp, errno);

  // From here on every failure removes the temporary file; PATH itself is
  // only ever replaced by the rename, which is atomic.
  auto fail = [&](const char *what, const std::string &file, int error) {
    if (fd >= 0)
      ::close(fd);
    ::unlink(tmp.c_str());
    failWith(what, file, error);
  };
  for (std::string_view piece : pieces) {
    const char *data = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      ssize_t n = ::write(fd, data, left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        fail("write", tmp, n < 0 ? errno : EIO);
      data += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0)
    fail("sync", tmp, errno);
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0)
    fail("write", tmp, errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail("rename into place", path, errno);

  // Make the rename itself durable. Some file systems cannot sync a
  // directory; the file is complete either way, so that is not an error.
  int dir = ::open(directoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

namespace {

const char *fileKind(mode_t mode) {
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISFIFO(mode))
    return "a pipe";
  if (S_ISSOCK(mode))
    return "a socket";
  return "not a plain file";
}

} // namespace

std::string readFileBounded(const std::string &path, uint64_t maxBytes,
                            std::string_view what, std::string_view why) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    failWith("open", path, errno);
  auto closeAndThrow = [&](const std::string &message) {
    ::close(fd);
    throw Error(message);
  };
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int error = errno;
    ::close(fd);
    failWith("read", path, error);
  }
  if (S_ISDIR(info.st_mode)) {
    ::close(fd);
    failWith("read", path, EISDIR);
  }
  // A device or a pipe may never end (/dev/zero): only regular files, whose
  // size is known before reading, are read.
  if (!S_ISREG(info.st_mode))
    closeAndThrow(fmt::format("cannot read '{}': it is {}, and {} is read only from a "
                              "regular file",
                              path, fileKind(info.st_mode), what));
  auto tooLarge = [&](uint64_t bytes, std::string_view atLeast) {
    closeAndThrow(fmt::format("cannot read '{}': {}{} bytes, more than the limit of {} "
                              "bytes for {} ({})",
                              path, atLeast, bytes, maxBytes, what, why));
  };
  if (static_cast<uint64_t>(info.st_size) > maxBytes)
    tooLarge(static_cast<uint64_t>(info.st_size), "");
  std::string bytes;
  bytes.reserve(static_cast<size_t>(info.st_size));
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      failWith("read", path, error);
    }
    if (n == 0)
      break;
    // The file may grow while it is read.
    if (bytes.size() + static_cast<size_t>(n) > maxBytes)
      tooLarge(bytes.size() + static_cast<size_t>(n), "at least ");
    bytes.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return bytes;
}

} // namespace stepc
