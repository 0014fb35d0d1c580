// Tokens of the .sg text format (internal to the parser; see stepc/text.h).
#pragma once

#include "stepc/error.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace stepc::sg {

enum class TokenKind {
  Eof,
  Ident,  // [A-Za-z_][A-Za-z0-9_.]*
  Int,    // -?[0-9]+ that fits in int64
  Real,   // has '.', an exponent, or is -inf ("inf"/"nan" lex as Ident)
  String, // "..." with \" \\ \n \t \r \xHH escapes
  Var,    // %name or %123; text excludes the '%'
  Punct,  // any other single printable ASCII character
};

struct Token {
  TokenKind kind = TokenKind::Eof;
  std::string_view text; // as written (for Var: without '%'; for String: with quotes)
  int line = 1;
  int col = 1;
  int64_t intValue = 0;
  double realValue = 0;
  std::string stringValue; // String: the decoded bytes

  bool isPunct(char c) const {
    return kind == TokenKind::Punct && text.size() == 1 && text[0] == c;
  }
  bool isIdent(std::string_view word) const {
    return kind == TokenKind::Ident && text == word;
  }
};

// How a token reads in "expected X, found Y" messages: 'foo', '%x',
// string "abc", end of file. Long tokens are shortened.
std::string describe(const Token &token);

// User text as quoted in messages: at most 40 bytes, then "...", so a
// megabyte-long name cannot make a megabyte-long error.
std::string clip(std::string_view text);

// Escapes a byte for messages: 'a' stays, 0x01 becomes \x01.
std::string escapeByte(unsigned char c);

// Lexes on demand with one token of lookahead, so a bad byte is reported only
// when the parser reaches it, after any earlier syntax error.
class Lexer {
public:
  Lexer(std::string_view text, std::string filename)
      : text_(text), filename_(std::move(filename)) {}

  const Token &peek();
  Token next();

  const std::string &filename() const { return filename_; }
  SourceLoc locOf(const Token &token) const {
    return SourceLoc(filename_, token.line, token.col);
  }
  [[noreturn]] void fail(const Token &token, const std::string &message) const;
  [[noreturn]] void failAt(int line, int col, const std::string &message) const;

private:
  Token lex();
  void skipSpaceAndComments();
  void lexNumber(Token &token);
  void lexString(Token &token);
  void lexVar(Token &token);
  bool atEnd() const { return pos_ >= text_.size(); }
  unsigned char cur() const { return static_cast<unsigned char>(text_[pos_]); }
  unsigned char at(size_t i) const {
    return i < text_.size() ? static_cast<unsigned char>(text_[i]) : 0;
  }
  void advance(size_t n = 1);

  std::string_view text_;
  std::string filename_;
  size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
  bool havePeeked_ = false;
  Token peeked_;
};

} // namespace stepc::sg
