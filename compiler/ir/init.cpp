#include "stepc/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>

namespace stepc {
namespace {

struct InitName {
  Init::Kind kind;
  std::string_view name;
};
constexpr std::array<InitName, 9> kInitNames = {{
    {Init::Kind::Zeros, "zeros"},
    {Init::Kind::Ones, "ones"},
    {Init::Kind::Constant, "constant"},
    {Init::Kind::Normal, "normal"},
    {Init::Kind::Uniform, "uniform"},
    {Init::Kind::HeNormal, "he_normal"},
    {Init::Kind::HeUniform, "he_uniform"},
    {Init::Kind::XavierNormal, "xavier_normal"},
    {Init::Kind::XavierUniform, "xavier_uniform"},
}};

// Which numbers each kind reads, in the order they are written.
std::vector<std::string_view> argumentNames(Init::Kind kind) {
  switch (kind) {
  case Init::Kind::Zeros:
  case Init::Kind::Ones: return {};
  case Init::Kind::Constant: return {"value"};
  case Init::Kind::Normal: return {"mean", "std", "seed"};
  case Init::Kind::Uniform: return {"low", "high", "seed"};
  case Init::Kind::HeNormal:
  case Init::Kind::HeUniform:
  case Init::Kind::XavierNormal:
  case Init::Kind::XavierUniform: return {"seed"};
  }
  return {};
}

} // namespace

std::string_view initKindName(Init::Kind kind) {
  for (const InitName &n : kInitNames)
    if (n.kind == kind)
      return n.name;
  return "?";
}

Init::Kind parseInitKind(std::string_view name) {
  std::string known;
  for (const InitName &n : kInitNames) {
    if (n.name == name)
      return n.kind;
    known += fmt::format("{}{}", known.empty() ? "" : ", ", n.name);
  }
  throw Error(fmt::format("unknown initializer '{}'; expected one of: {}", name, known));
}

Attrs Init::toAttrs() const {
  Attrs attrs;
  attrs.set("init", std::string(initKindName(kind)));
  for (std::string_view arg : argumentNames(kind)) {
    if (arg == "seed")
      attrs.set("seed", seed);
    else if (arg == "value" || arg == "mean" || arg == "low")
      attrs.set(std::string(arg), a);
    else
      attrs.set(std::string(arg), b);
  }
  return attrs;
}

Init Init::fromAttrs(const Attrs &attrs) {
  const std::string &name = attrs.getString("init");
  Init init;
  init.kind = parseInitKind(name);
  std::vector<std::string_view> args = argumentNames(init.kind);
  for (const auto &[attr, value] : attrs.entries()) {
    // A param node keeps its type next to the initializer.
    if (attr == "init" || attr == "dtype" || attr == "shape")
      continue;
    if (std::find(args.begin(), args.end(), attr) == args.end())
      throw Error(fmt::format("initializer '{}' takes no argument '{}'{}", name, attr,
                              args.empty() ? std::string()
                                           : fmt::format(" (it takes: {})",
                                                         fmt::join(args, ", "))));
  }
  for (std::string_view arg : args) {
    if (arg == "seed")
      init.seed = attrs.getInt("seed");
    else if (arg == "value" || arg == "mean" || arg == "low")
      init.a = attrs.getReal(arg);
    else
      init.b = attrs.getReal(arg);
  }
  if (init.kind == Kind::Normal && !(init.b >= 0))
    throw Error(fmt::format("initializer 'normal' needs std >= 0, got {}", init.b));
  if (init.kind == Kind::Uniform && !(init.a <= init.b))
    throw Error(fmt::format("initializer 'uniform' needs low <= high, got low={} high={}",
                            init.a, init.b));
  return init;
}

} // namespace stepc
