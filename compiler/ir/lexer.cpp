#include "lexer.h"

#include <fmt/format.h>

#include <charconv>
#include <climits>
#include <cmath>
#include <limits>

namespace stepc::sg {
namespace {

bool isIdentStart(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool isDigit(unsigned char c) { return c >= '0' && c <= '9'; }
bool isIdentChar(unsigned char c) { return isIdentStart(c) || isDigit(c) || c == '.'; }
bool isPrintable(unsigned char c) { return c >= 0x20 && c < 0x7f; }

int hexValue(unsigned char c) {
  if (isDigit(c))
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

constexpr size_t kMaxQuoted = 40;

} // namespace

std::string clip(std::string_view text) {
  if (text.size() <= kMaxQuoted)
    return std::string(text);
  return std::string(text.substr(0, kMaxQuoted)) + "...";
}

std::string escapeByte(unsigned char c) {
  if (isPrintable(c))
    return std::string(1, static_cast<char>(c));
  return fmt::format("\\x{:02x}", c);
}

std::string describe(const Token &token) {
  switch (token.kind) {
  case TokenKind::Eof:
    return "end of file";
  case TokenKind::String:
    return "string " + clip(token.text);
  case TokenKind::Var:
    return "'%" + clip(token.text) + "'";
  case TokenKind::Ident:
  case TokenKind::Int:
  case TokenKind::Real:
  case TokenKind::Punct:
    return "'" + clip(token.text) + "'";
  }
  return "?";
}

void Lexer::failAt(int line, int col, const std::string &message) const {
  throw Error(locatedMessage(SourceLoc(filename_, line, col), message));
}

void Lexer::fail(const Token &token, const std::string &message) const {
  failAt(token.line, token.col, message);
}

const Token &Lexer::peek() {
  if (!havePeeked_) {
    peeked_ = lex();
    havePeeked_ = true;
  }
  return peeked_;
}

Token Lexer::next() {
  peek();
  havePeeked_ = false;
  return std::move(peeked_);
}

void Lexer::advance(size_t n) {
  for (size_t i = 0; i < n && !atEnd(); ++i, ++pos_) {
    // Saturate rather than overflow on absurdly long inputs.
    if (text_[pos_] == '\n') {
      line_ = line_ == INT_MAX ? line_ : line_ + 1;
      col_ = 1;
    } else if (col_ != INT_MAX) {
      ++col_;
    }
  }
}

void Lexer::skipSpaceAndComments() {
  while (!atEnd()) {
    unsigned char c = cur();
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      advance();
    } else if (c == '#' || (c == '/' && at(pos_ + 1) == '/')) {
      // Comments may hold any bytes (UTF-8 prose, say) up to the newline.
      size_t end = text_.find('\n', pos_);
      if (end == std::string_view::npos)
        end = text_.size();
      col_ = static_cast<int>(std::min<size_t>(INT_MAX, col_ + (end - pos_)));
      pos_ = end;
    } else {
      return;
    }
  }
}

Token Lexer::lex() {
  skipSpaceAndComments();
  Token token;
  token.line = line_;
  token.col = col_;
  if (atEnd()) {
    token.kind = TokenKind::Eof;
    return token;
  }
  unsigned char c = cur();
  size_t start = pos_;
  if (isIdentStart(c)) {
    while (!atEnd() && isIdentChar(cur()))
      advance();
    token.kind = TokenKind::Ident;
    token.text = text_.substr(start, pos_ - start);
  } else if (isDigit(c) || (c == '-' && (isDigit(at(pos_ + 1)) || at(pos_ + 1) == 'i'))) {
    lexNumber(token);
  } else if (c == '"') {
    lexString(token);
  } else if (c == '%') {
    lexVar(token);
  } else if (isPrintable(c)) {
    advance();
    token.kind = TokenKind::Punct;
    token.text = text_.substr(start, 1);
  } else {
    failAt(token.line, token.col,
           fmt::format("unexpected character '{}'", escapeByte(c)));
  }
  return token;
}

void Lexer::lexNumber(Token &token) {
  size_t start = pos_;
  if (cur() == '-')
    advance();
  bool real = false;
  if (!atEnd() && cur() == 'i') {
    // "-inf"; a plain "inf" is an identifier that attribute values read as a real.
    while (!atEnd() && isIdentChar(cur()))
      advance();
    token.text = text_.substr(start, pos_ - start);
    if (token.text != "-inf")
      fail(token, fmt::format("malformed number '{}'", clip(token.text)));
    token.kind = TokenKind::Real;
    token.realValue = -std::numeric_limits<double>::infinity();
    return;
  }
  while (!atEnd() && isDigit(cur()))
    advance();
  if (!atEnd() && cur() == '.') {
    real = true;
    advance();
    while (!atEnd() && isDigit(cur()))
      advance();
  }
  if (!atEnd() && (cur() == 'e' || cur() == 'E')) {
    size_t digits = pos_ + 1;
    if (at(digits) == '+' || at(digits) == '-')
      ++digits;
    if (isDigit(at(digits))) {
      real = true;
      advance(digits - pos_);
      while (!atEnd() && isDigit(cur()))
        advance();
    }
  }
  // "12abc" or "1.5.2" is one malformed token, not a number and a name.
  bool malformed = false;
  while (!atEnd() && isIdentChar(cur())) {
    malformed = true;
    advance();
  }
  token.text = text_.substr(start, pos_ - start);
  if (malformed)
    fail(token, fmt::format("malformed number '{}'", clip(token.text)));
  const char *first = token.text.data();
  const char *last = first + token.text.size();
  // `what` and `tooLarge` word the out-of-range error: "integer '12...' does not fit in 64 bits".
  auto convert = [&](auto &value, std::string_view what, std::string_view tooLarge) {
    auto [ptr, ec] = std::from_chars(first, last, value);
    if (ec == std::errc::result_out_of_range)
      fail(token, fmt::format("{} '{}' {}", what, clip(token.text), tooLarge));
    if (ec != std::errc() || ptr != last)
      fail(token, fmt::format("malformed number '{}'", clip(token.text)));
  };
  if (real) {
    token.kind = TokenKind::Real;
    convert(token.realValue, "real number", "is out of range");
  } else {
    token.kind = TokenKind::Int;
    convert(token.intValue, "integer", "does not fit in 64 bits");
  }
}

void Lexer::lexString(Token &token) {
  size_t start = pos_;
  int line = line_, col = col_;
  advance(); // opening quote
  token.kind = TokenKind::String;
  std::string value;
  while (true) {
    if (atEnd() || cur() == '\n')
      failAt(line, col, "unterminated string");
    unsigned char c = cur();
    if (c == '"') {
      advance();
      break;
    }
    if (c == '\\') {
      int escLine = line_, escCol = col_;
      unsigned char e = at(pos_ + 1);
      switch (e) {
      case '"':
        value += '"';
        break;
      case '\\':
        value += '\\';
        break;
      case 'n':
        value += '\n';
        break;
      case 't':
        value += '\t';
        break;
      case 'r':
        value += '\r';
        break;
      case 'x': {
        int hi = hexValue(at(pos_ + 2)), lo = hexValue(at(pos_ + 3));
        if (hi < 0 || lo < 0)
          failAt(escLine, escCol, "expected two hex digits after '\\x' in string");
        value += static_cast<char>(hi * 16 + lo);
        advance(2);
        break;
      }
      default:
        if (pos_ + 1 >= text_.size())
          failAt(line, col, "unterminated string");
        failAt(escLine, escCol,
               fmt::format("unknown escape '\\{}' in string (use \\\", \\\\, \\n, \\t, "
                           "\\r or \\xHH)",
                           escapeByte(e)));
      }
      advance(2);
      continue;
    }
    if (!isPrintable(c))
      failAt(line_, col_,
             fmt::format("unexpected character '{}' in string (write it as \\xHH)",
                         escapeByte(c)));
    value += static_cast<char>(c);
    advance();
  }
  token.text = text_.substr(start, pos_ - start);
  token.stringValue = std::move(value);
}

void Lexer::lexVar(Token &token) {
  int line = line_, col = col_;
  advance(); // '%'
  size_t start = pos_;
  while (!atEnd() && isIdentChar(cur()))
    advance();
  token.kind = TokenKind::Var;
  token.text = text_.substr(start, pos_ - start);
  if (token.text.empty())
    failAt(line, col, "expected a name or a number after '%'");
  bool numeric = isDigit(static_cast<unsigned char>(token.text[0]));
  bool valid = isIdentStart(static_cast<unsigned char>(token.text[0]));
  if (numeric) {
    valid = true;
    for (char ch : token.text)
      valid = valid && isDigit(static_cast<unsigned char>(ch));
  }
  if (!valid)
    failAt(line, col,
           fmt::format("invalid value name '%{}': use an identifier or a number",
                       clip(token.text)));
}

} // namespace stepc::sg
