#include <gtest/gtest.h>
TEST(ShapeRules, Placeholder) {}
