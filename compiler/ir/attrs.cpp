#include "stepc/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace stepc {
namespace {

const char *kindName(const AttrValue &value) {
  switch (value.index()) {
  case 0: return "an integer";
  case 1: return "a real";
  case 2: return "a list of integers";
  case 3: return "a list of reals";
  default: return "a name";
  }
}

[[noreturn]] void wrongKind(std::string_view name, const char *expected,
                            const AttrValue &found) {
  throw Error(fmt::format("attribute '{}' must be {}, found {} ({})", name, expected,
                          kindName(found), attrValueSummary(found)));
}

// Reals always print with a '.', an exponent, or as inf/nan, so that they
// parse back as reals; "{}" gives the shortest text that round-trips.
std::string realString(double v) {
  if (std::isnan(v))
    return "nan";
  if (std::isinf(v))
    return v > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".e") == std::string::npos)
    s += ".0";
  return s;
}

bool isBareWord(const std::string &s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  if (s == "inf" || s == "nan")
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
  });
}

std::string quoted(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\')
      out += fmt::format("\\{}", c);
    else if (u < 0x20 || u >= 0x7f)
      out += fmt::format("\\x{:02x}", u);
    else
      out += c;
  }
  return out + "\"";
}

} // namespace

Attrs::Attrs(std::initializer_list<std::pair<std::string, AttrValue>> entries) {
  for (const auto &[name, value] : entries)
    set(name, value);
}

void Attrs::set(std::string name, AttrValue value) {
  // "[]" reads back as an empty integer list, so store it that way; getReals
  // converts.
  if (auto *reals = std::get_if<std::vector<double>>(&value); reals && reals->empty())
    value = std::vector<int64_t>{};
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const auto &entry, const std::string &n) {
                               return entry.first < n;
                             });
  if (it != entries_.end() && it->first == name)
    it->second = std::move(value);
  else
    entries_.insert(it, {std::move(name), std::move(value)});
}

const AttrValue *Attrs::find(std::string_view name) const {
  for (const auto &[n, v] : entries_)
    if (n == name)
      return &v;
  return nullptr;
}

bool Attrs::has(std::string_view name) const { return find(name) != nullptr; }

static const AttrValue &required(const Attrs &attrs, std::string_view name) {
  const AttrValue *v = attrs.find(name);
  if (!v)
    throw Error(fmt::format("missing attribute '{}'", name));
  return *v;
}

int64_t Attrs::getInt(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *i = std::get_if<int64_t>(&v))
    return *i;
  wrongKind(name, "an integer", v);
}

double Attrs::getReal(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *d = std::get_if<double>(&v))
    return *d;
  if (auto *i = std::get_if<int64_t>(&v))
    return static_cast<double>(*i);
  wrongKind(name, "a number", v);
}

const std::vector<int64_t> &Attrs::getInts(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *l = std::get_if<std::vector<int64_t>>(&v))
    return *l;
  wrongKind(name, "a list of integers", v);
}

std::vector<double> Attrs::getReals(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *l = std::get_if<std::vector<double>>(&v))
    return *l;
  if (auto *l = std::get_if<std::vector<int64_t>>(&v))
    return std::vector<double>(l->begin(), l->end());
  wrongKind(name, "a list of numbers", v);
}

const std::string &Attrs::getString(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *s = std::get_if<std::string>(&v))
    return *s;
  wrongKind(name, "a name", v);
}

DType Attrs::getDType(std::string_view name) const {
  const AttrValue &v = required(*this, name);
  if (auto *s = std::get_if<std::string>(&v))
    if (auto d = parseDType(*s))
      return *d;
  wrongKind(name, "a dtype (f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool)", v);
}

std::string attrValueString(const AttrValue &value) {
  switch (value.index()) {
  case 0: return fmt::format("{}", std::get<int64_t>(value));
  case 1: return realString(std::get<double>(value));
  case 2: return fmt::format("[{}]", fmt::join(std::get<std::vector<int64_t>>(value), ","));
  case 3: {
    std::string out = "[";
    for (double d : std::get<std::vector<double>>(value))
      out += (out.size() > 1 ? "," : "") + realString(d);
    return out + "]";
  }
  default: {
    const auto &s = std::get<std::string>(value);
    return isBareWord(s) ? s : quoted(s);
  }
  }
}

std::string attrValueSummary(const AttrValue &value) {
  constexpr size_t kShown = 8;
  auto shorten = [&](const auto &list) {
    using List = std::decay_t<decltype(list)>;
    if (list.size() <= kShown)
      return attrValueString(list);
    std::string head = attrValueString(List(list.begin(), list.begin() + kShown));
    head.pop_back();
    return fmt::format("{},... ({} entries)]", head, list.size());
  };
  if (const auto *ints = std::get_if<std::vector<int64_t>>(&value))
    return shorten(*ints);
  if (const auto *reals = std::get_if<std::vector<double>>(&value))
    return shorten(*reals);
  if (const auto *text = std::get_if<std::string>(&value); text && text->size() > 64)
    return fmt::format("{}... ({} bytes)", attrValueString(text->substr(0, 64)), text->size());
  return attrValueString(value);
}

} // namespace stepc
