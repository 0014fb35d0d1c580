// Data sets the demos train on, read from Debian's packages.
#pragma once

#include "stepc/tensor.h"

#include <string>
#include <vector>

namespace stepc::cli {

// IDX files (MNIST's format), gzip-compressed: images as f32 in [0, 1]
// shaped [count, rows * cols]; labels as i32 [count].
struct ImageSet {
  std::vector<float> images; // count * pixels
  std::vector<int32_t> labels;
  int64_t count = 0, pixels = 0;
};
ImageSet readIdxImages(const std::string &imagesPath, const std::string &labelsPath);

// Where dataset-fashion-mnist installs its files.
inline const char *kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// One line per word, lower-case a-z only (wamerican's list, filtered).
std::vector<std::string> readWords(const std::string &path);

// Where Debian's fortunes package installs its fortune files.
inline const char *kFortunesDir = "/usr/share/games/fortunes";

// Every fortune of the fortune files in `dir` (the text files, not the .dat
// indexes or .u8 links), in file-name order; the files separate fortunes
// with lines holding only "%". Each fortune keeps its final line break.
std::vector<std::string> readFortunes(const std::string &dir);

// A progress line on a terminal ("\r" redrawn), plain lines otherwise (pipes,
// CI=true).
class Progress {
public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, const std::string &status);
  void finish(const std::string &status);

private:
  std::string label_;
  int64_t total_;
  bool terminal_;
  int64_t lastPrinted_ = -1;
};

} // namespace stepc::cli
