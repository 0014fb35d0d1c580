#include "datasets.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace stepc::cli {
namespace {

std::vector<unsigned char> readGzip(const std::string &path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file)
    throw Error(fmt::format("cannot open '{}': {} (install Debian's dataset-fashion-mnist)",
                            path, std::strerror(errno)));
  std::vector<unsigned char> data;
  unsigned char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0)
    data.insert(data.end(), buffer, buffer + n);
  bool failed = n < 0;
  gzclose(file);
  if (failed)
    throw Error(fmt::format("'{}' is not a readable gzip file", path));
  return data;
}

uint32_t bigEndian(const std::vector<unsigned char> &d, size_t at) {
  return uint32_t(d[at]) << 24 | uint32_t(d[at + 1]) << 16 | uint32_t(d[at + 2]) << 8 | d[at + 3];
}

} // namespace

ImageSet readIdxImages(const std::string &imagesPath, const std::string &labelsPath) {
  std::vector<unsigned char> images = readGzip(imagesPath), labels = readGzip(labelsPath);
  if (images.size() < 16 || bigEndian(images, 0) != 0x803)
    throw Error(fmt::format("'{}' is not an IDX image file (magic 0x803)", imagesPath));
  if (labels.size() < 8 || bigEndian(labels, 0) != 0x801)
    throw Error(fmt::format("'{}' is not an IDX label file (magic 0x801)", labelsPath));
  ImageSet set;
  set.count = bigEndian(images, 4);
  set.pixels = int64_t(bigEndian(images, 8)) * bigEndian(images, 12);
  if (bigEndian(labels, 4) != set.count || images.size() != 16 + size_t(set.count * set.pixels) ||
      labels.size() != 8 + size_t(set.count))
    throw Error(fmt::format("'{}' and '{}' disagree on their sizes", imagesPath, labelsPath));
  set.images.resize(images.size() - 16);
  for (size_t i = 0; i < set.images.size(); ++i)
    set.images[i] = static_cast<float>(images[16 + i]) / 255.0f;
  set.labels.assign(labels.begin() + 8, labels.end());
  return set;
}

std::vector<std::string> readWords(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw Error(fmt::format("cannot open '{}': {} (install Debian's wamerican)", path,
                            std::strerror(errno)));
  std::vector<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    bool plain = !line.empty();
    for (char c : line)
      plain = plain && c >= 'a' && c <= 'z';
    if (plain)
      words.push_back(line);
  }
  return words;
}

std::vector<std::string> readFortunes(const std::string &dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::vector<fs::path> files;
  if (fs::is_directory(dir, error))
    for (const fs::directory_entry &entry : fs::directory_iterator(dir, error))
      if (entry.is_regular_file() && !entry.is_symlink() && !entry.path().has_extension())
        files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::vector<std::string> fortunes;
  for (const fs::path &file : files) {
    std::ifstream in(file);
    std::string line, fortune;
    while (std::getline(in, line)) {
      if (line == "%") {
        if (!fortune.empty())
          fortunes.push_back(fortune);
        fortune.clear();
      } else {
        fortune += line + "\n";
      }
    }
    if (!fortune.empty())
      fortunes.push_back(fortune);
  }
  if (fortunes.empty())
    throw Error(fmt::format("no fortunes in '{}' (install Debian's fortunes)", dir));
  return fortunes;
}

Progress::Progress(std::string label, int64_t total) : label_(std::move(label)), total_(total) {
  const char *ci = std::getenv("CI");
  terminal_ = isatty(STDOUT_FILENO) && !(ci && std::string(ci) == "true");
}

void Progress::update(int64_t done, const std::string &status) {
  if (terminal_) {
    int width = 30;
    int filled = static_cast<int>(width * done / std::max<int64_t>(total_, 1));
    fmt::print("\r{} [{}{}] {}/{} {}", label_, std::string(filled, '#'),
               std::string(width - filled, '.'), done, total_, status);
    std::fflush(stdout);
  } else if (done < total_ && done - lastPrinted_ >= std::max<int64_t>(total_ / 5, 1)) {
    // The last line is finish()'s.
    fmt::print("{} {}/{} {}\n", label_, done, total_, status);
    lastPrinted_ = done;
  }
}

void Progress::finish(const std::string &status) {
  if (terminal_)
    fmt::print("\r{} [{}] {}/{} {}\n", label_, std::string(30, '#'), total_, total_, status);
  else
    fmt::print("{} {}/{} {}\n", label_, total_, total_, status);
}

} // namespace stepc::cli
