#include "stepc/npy.h"

#include "stepc/error.h"
#include "stepc/file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <sstream>

namespace stepc {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

// NumPy's array-protocol type string: the byte order ('|' for single bytes,
// else little-endian '<'), the kind (b bool, f float, i signed, u unsigned)
// and the size in bytes. NumPy has no bfloat16: a bf16 tensor is stored as
// its bit patterns in uint16 (what torch's x.view(torch.uint16) or
// ml_dtypes' .view(np.uint16) give), and a <u2 file reads back as u16; the
// CLI binds such a file to a bf16 input by its bits (bindNpy).
std::string descrOf(DType dtype) {
  char kind = dtype == DType::Bool                         ? 'b'
              : dtype == DType::BF16 || isUnsigned(dtype) ? 'u'
              : isFloat(dtype)                             ? 'f'
                                                           : 'i';
  size_t size = dtypeSize(dtype);
  return fmt::format("{}{}{}", size == 1 ? '|' : '<', kind, size);
}

std::optional<DType> dtypeOfDescr(std::string_view descr) {
  for (DType d : kAllDTypes)
    if (d != DType::BF16 && descrOf(d) == descr)
      return d;
  return std::nullopt;
}

// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only the three keys NumPy writes are read.
std::string_view dictValue(std::string_view header, std::string_view key,
                           const std::string &what) {
  std::string quoted = fmt::format("'{}'", key);
  size_t at = header.find(quoted);
  if (at == std::string_view::npos)
    throw Error(fmt::format("{}: npy header has no '{}' entry", what, key));
  size_t colon = header.find(':', at + quoted.size());
  if (colon == std::string_view::npos)
    throw Error(fmt::format("{}: malformed npy header near '{}'", what, key));
  std::string_view rest = header.substr(colon + 1);
  while (!rest.empty() && rest.front() == ' ')
    rest.remove_prefix(1);
  size_t end;
  if (!rest.empty() && rest.front() == '(')
    end = rest.find(')') + 1;
  else if (!rest.empty() && rest.front() == '\'')
    end = rest.find('\'', 1) + 1;
  else
    end = rest.find_first_of(",}");
  if (end == std::string_view::npos || end == 0 || end > rest.size())
    throw Error(fmt::format("{}: malformed npy header near '{}'", what, key));
  return rest.substr(0, end);
}

Shape parseShapeTuple(std::string_view tuple, const std::string &what) {
  Shape shape;
  std::string_view body = tuple.substr(1, tuple.size() - 2);
  size_t i = 0;
  while (i < body.size()) {
    while (i < body.size() && (body[i] == ' ' || body[i] == ','))
      ++i;
    if (i == body.size())
      break;
    int64_t dim = 0;
    size_t start = i;
    while (i < body.size() && body[i] >= '0' && body[i] <= '9') {
      if (dim > (int64_t(1) << 40))
        throw Error(fmt::format("{}: npy shape {} is too large", what, tuple));
      dim = dim * 10 + (body[i] - '0');
      ++i;
    }
    if (i == start)
      throw Error(fmt::format("{}: malformed npy shape {}", what, tuple));
    shape.push_back(dim);
  }
  return shape;
}

} // namespace

Tensor parseNpy(std::string_view bytes, const std::string &what) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != kMagic)
    throw Error(fmt::format("{}: not a .npy file (bad magic)", what));
  unsigned major = static_cast<unsigned char>(bytes[6]);
  size_t headerLen, offset;
  if (major == 1) {
    headerLen = static_cast<unsigned char>(bytes[8]) |
                static_cast<unsigned char>(bytes[9]) << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12)
      throw Error(fmt::format("{}: truncated .npy header", what));
    headerLen = 0;
    for (int i = 3; i >= 0; --i)
      headerLen = headerLen << 8 | static_cast<unsigned char>(bytes[8 + i]);
    offset = 12;
  } else {
    throw Error(fmt::format("{}: unsupported .npy version {}", what, major));
  }
  if (bytes.size() < offset + headerLen)
    throw Error(fmt::format("{}: truncated .npy header", what));
  std::string_view header = bytes.substr(offset, headerLen);

  std::string_view descr = dictValue(header, "descr", what);
  descr = descr.substr(1, descr.size() - 2);
  auto dtype = dtypeOfDescr(descr);
  if (!dtype) {
    std::string known;
    for (DType d : kAllDTypes)
      if (d != DType::BF16)
        known += fmt::format("{}{}", known.empty() ? "" : ", ", descrOf(d));
    throw Error(fmt::format("{}: unsupported npy dtype '{}'; expected one of {} (bf16 is "
                            "held as its <u2 bits)",
                            what, descr, known));
  }
  if (dictValue(header, "fortran_order", what) != "False")
    throw Error(fmt::format("{}: Fortran-order arrays are not supported; save "
                            "with np.ascontiguousarray",
                            what));
  Shape shape = parseShapeTuple(dictValue(header, "shape", what), what);

  int64_t numel = checkedNumel(shape);
  size_t expected = static_cast<size_t>(numel) * dtypeSize(*dtype);
  size_t available = bytes.size() - offset - headerLen;
  if (available != expected)
    throw Error(fmt::format("{}: npy data has {} bytes, expected {} for {}", what,
                            available, expected, typeString({*dtype, shape})));
  Tensor t(*dtype, shape);
  if (expected > 0)
    std::memcpy(t.bytes(), bytes.data() + offset + headerLen, expected);
  return t;
}

Tensor readNpy(const std::string &path) {
  return parseNpy(readFileBounded(path, kMaxTensorFileBytes, "a .npy file",
                                  "past any tensor stepc holds"),
                  path);
}

std::string serializeNpy(const Tensor &tensor) {
  // Python tuple syntax: "()", "(3,)", "(3, 4)".
  std::string shape = fmt::format("{}", fmt::join(tensor.shape(), ", "));
  if (tensor.rank() == 1)
    shape += ",";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}",
                  descrOf(tensor.dtype()), shape);
  // Pad with spaces so that the data starts on a 64-byte boundary.
  size_t total = kMagic.size() + 4 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char *>(tensor.bytes()), tensor.nbytes());
  return out;
}

void writeNpy(const std::string &path, const Tensor &tensor) {
  writeFileAtomically(path, serializeNpy(tensor));
}

Tensor bitsAs(Tensor array, DType expected) {
  if (array.dtype() != DType::U16 || expected != DType::BF16)
    return array;
  Tensor out(DType::BF16, array.shape());
  std::memcpy(out.bytes(), array.bytes(), array.nbytes());
  return out;
}

} // namespace stepc
