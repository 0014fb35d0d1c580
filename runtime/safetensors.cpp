// safetensors (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//    "__metadata__": {"key": "value"}}
// padded with spaces, then the tensors' bytes (row-major, little-endian);
// offsets are relative to the end of the header.
#include "stepc/file.h"

#include "stepc/error.h"
#include "stepc/executable.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstring>

namespace stepc {
namespace {

using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; add byte swapping for this host");

// The reference implementation refuses larger headers; so do we, which also
// bounds what a corrupt length can make us parse.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";

// The safetensors names are stepc's in capitals: F32, BF16, BOOL, ...
std::string fileDTypeName(DType dtype) {
  std::string name(dtypeName(dtype));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); });
  return name;
}

std::optional<DType> parseFileDType(std::string_view name) {
  for (DType d : kAllDTypes)
    if (fileDTypeName(d) == name)
      return d;
  return std::nullopt;
}

// dtypes other frameworks write that stepc has no type for.
bool isForeignDType(std::string_view name) {
  for (std::string_view d : {"F8_E4M3", "F8_E5M2", "C64"})
    if (d == name)
      return true;
  return false;
}

struct Entry {
  std::string name;
  TensorType type;
  uint64_t begin = 0, end = 0;
};

// Reads header field `key` of tensor `name` as a non-negative integer.
uint64_t unsignedField(const json &value, const std::string &what, const std::string &name,
                       std::string_view field) {
  if (!value.is_number_unsigned())
    throw Error(fmt::format("{}: tensor '{}': {} must hold non-negative integers, got {}",
                            what, name, field, value.dump()));
  return value.get<uint64_t>();
}

Entry parseEntry(const std::string &name, const json &info, const std::string &what) {
  if (!info.is_object())
    throw Error(fmt::format("{}: tensor '{}': expected an object with dtype, shape and "
                            "data_offsets, got {}",
                            what, name, info.dump()));
  for (const char *key : {"dtype", "shape", "data_offsets"})
    if (!info.contains(key))
      throw Error(fmt::format("{}: tensor '{}' has no '{}'", what, name, key));
  Entry entry;
  entry.name = name;

  const json &dtype = info["dtype"];
  if (!dtype.is_string())
    throw Error(fmt::format("{}: tensor '{}': dtype must be a string, got {}", what, name,
                            dtype.dump()));
  std::string dtypeName = dtype.get<std::string>();
  auto parsed = parseFileDType(dtypeName);
  if (!parsed)
    throw Error(fmt::format("{}: tensor '{}' has {} dtype {}; stepc reads F32, F64, F16, "
                            "BF16, I8, U8, I16, U16, I32, U32, I64, U64 and BOOL",
                            what, name, isForeignDType(dtypeName) ? "unsupported" : "unknown",
                            dtypeName));
  entry.type.dtype = *parsed;

  const json &shape = info["shape"];
  if (!shape.is_array())
    throw Error(fmt::format("{}: tensor '{}': shape must be an array, got {}", what, name,
                            shape.dump()));
  for (const json &dim : shape) {
    uint64_t d = unsignedField(dim, what, name, "shape");
    if (d > static_cast<uint64_t>(INT64_MAX))
      throw Error(fmt::format("{}: tensor '{}': dimension {} is too large", what, name, d));
    entry.type.shape.push_back(static_cast<int64_t>(d));
  }

  const json &offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    throw Error(fmt::format("{}: tensor '{}': data_offsets must be [begin, end], got {}",
                            what, name, offsets.dump()));
  entry.begin = unsignedField(offsets[0], what, name, "data_offsets");
  entry.end = unsignedField(offsets[1], what, name, "data_offsets");
  if (entry.end < entry.begin)
    throw Error(fmt::format("{}: tensor '{}': data_offsets [{}, {}] end before they begin",
                            what, name, entry.begin, entry.end));

  int64_t numel;
  try {
    numel = checkedNumel(entry.type.shape);
  } catch (const Error &e) {
    throw Error(fmt::format("{}: tensor '{}': {}", what, name, e.what()));
  }
  uint64_t elementBytes = dtypeSize(entry.type.dtype);
  uint64_t length = entry.end - entry.begin;
  if (static_cast<unsigned __int128>(numel) * elementBytes != length)
    throw Error(fmt::format("{}: tensor '{}' is {} ({} elements of {} bytes) but its "
                            "data_offsets [{}, {}] hold {} bytes",
                            what, name, typeString(entry.type), numel, elementBytes,
                            entry.begin, entry.end, length));
  return entry;
}

} // namespace

void writeSafetensors(const std::string &path, const std::map<std::string, Tensor> &tensors,
                      const std::map<std::string, std::string> &metadata) {
  // Data in the order the reference writer uses: widest dtype first, then by
  // name, so every tensor's data is aligned to its element size (readers that
  // map the file may view it in place).
  std::vector<const std::pair<const std::string, Tensor> *> order;
  for (const auto &entry : tensors) {
    if (entry.first == kMetadataKey)
      throw Error(fmt::format("cannot write '{}': '{}' is reserved and cannot name a tensor",
                              path, kMetadataKey));
    order.push_back(&entry);
  }
  std::stable_sort(order.begin(), order.end(), [](auto *a, auto *b) {
    return dtypeSize(a->second.dtype()) > dtypeSize(b->second.dtype());
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const auto *entry : order) {
    const Tensor &t = entry->second;
    header[entry->first] = {{"dtype", fileDTypeName(t.dtype())},
                            {"shape", t.shape()},
                            {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  if (!metadata.empty())
    header[std::string(kMetadataKey)] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception &e) {
    // Names and metadata must be valid UTF-8 to be JSON.
    throw Error(fmt::format("cannot write '{}': {}", path, e.what()));
  }
  // Pad with spaces so that the data starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');

  char length[8];
  uint64_t n = text.size();
  std::memcpy(length, &n, 8);
  std::vector<std::string_view> pieces{std::string_view(length, 8), text};
  for (const auto *entry : order)
    pieces.emplace_back(reinterpret_cast<const char *>(entry->second.bytes()),
                        entry->second.nbytes());
  writeFileAtomically(path, pieces);
}

std::map<std::string, Tensor> readSafetensors(const std::string &path,
                                              std::map<std::string, std::string> *metadata) {
  std::string bytes = readFileBounded(path, kMaxTensorFileBytes, "a safetensors file",
                                      "past any tensor stepc holds");
  const std::string &what = path;
  if (bytes.size() < 8)
    throw Error(fmt::format("{}: not a safetensors file: {} bytes, shorter than the 8-byte "
                            "header length",
                            what, bytes.size()));
  uint64_t headerBytes;
  std::memcpy(&headerBytes, bytes.data(), 8);
  if (headerBytes > bytes.size() - 8)
    throw Error(fmt::format("{}: not a safetensors file or truncated: the header length is "
                            "{} bytes but only {} bytes follow it",
                            what, headerBytes, bytes.size() - 8));
  if (headerBytes > kMaxHeaderBytes)
    throw Error(fmt::format("{}: the header length {} exceeds the limit of {} bytes", what,
                            headerBytes, kMaxHeaderBytes));

  std::string_view headerText(bytes.data() + 8, headerBytes);
  json header;
  try {
    header = json::parse(headerText.begin(), headerText.end());
  } catch (const json::exception &e) {
    throw Error(fmt::format("{}: the safetensors header is not valid JSON: {}", what,
                            e.what()));
  }
  if (!header.is_object())
    throw Error(fmt::format("{}: the safetensors header must be a JSON object", what));

  std::vector<Entry> entries;
  for (const auto &[name, info] : header.items()) {
    if (name == kMetadataKey) {
      if (!info.is_object())
        throw Error(fmt::format("{}: {} must be an object of strings", what, kMetadataKey));
      for (const auto &[key, value] : info.items()) {
        if (!value.is_string())
          throw Error(fmt::format("{}: {} entry '{}' must be a string, got {}", what,
                                  kMetadataKey, key, value.dump()));
        if (metadata)
          (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    entries.push_back(parseEntry(name, info, what));
  }

  // The data must be exactly the tensors, back to back: no gaps, overlaps,
  // or bytes past the last tensor (as the reference reader requires).
  uint64_t dataBytes = bytes.size() - 8 - headerBytes;
  std::sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const Entry *previous = nullptr;
  for (const Entry &e : entries) {
    if (e.end > dataBytes)
      throw Error(fmt::format("{}: tensor '{}': data_offsets [{}, {}] run past the end of the "
                              "data ({} bytes); is the file truncated?",
                              what, e.name, e.begin, e.end, dataBytes));
    if (e.begin < covered)
      throw Error(fmt::format("{}: tensors '{}' and '{}' overlap: data_offsets [{}, {}] and "
                              "[{}, {}]",
                              what, previous->name, e.name, previous->begin, previous->end,
                              e.begin, e.end));
    if (e.begin > covered)
      throw Error(fmt::format("{}: bytes [{}, {}) of the data belong to no tensor (before "
                              "tensor '{}')",
                              what, covered, e.begin, e.name));
    covered = e.end;
    previous = &e;
  }
  if (covered != dataBytes)
    throw Error(fmt::format("{}: {} bytes after the last tensor belong to no tensor", what,
                            dataBytes - covered));

  std::map<std::string, Tensor> tensors;
  const char *data = bytes.data() + 8 + headerBytes;
  for (const Entry &e : entries) {
    Tensor t(e.type);
    if (t.nbytes() > 0)
      std::memcpy(t.bytes(), data + e.begin, t.nbytes());
    // Only 0 and 1 are bools; normalize what other writers may put there.
    if (e.type.dtype == DType::Bool)
      for (int64_t i = 0; i < t.numel(); ++i)
        t.data<uint8_t>()[i] = t.data<uint8_t>()[i] != 0;
    tensors.emplace(e.name, std::move(t));
  }
  return tensors;
}

} // namespace stepc
