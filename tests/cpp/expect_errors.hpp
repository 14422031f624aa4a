// Shared by the gtest files: assert that a call is refused as a user mistake (ArgumentError of the
// ValueError kind) with a message naming what it should.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "errors.hpp"

// Runs `call`, expects a ValueError-kind ArgumentError whose message contains every `needle`.
template <typename F>
void expect_value_error(F call, std::initializer_list<const char*> needles) {
  try {
    call();
    FAIL() << "expected an ArgumentError";
  } catch (const knetcnn::ArgumentError& e) {
    EXPECT_EQ(e.kind(), knetcnn::ArgumentError::Kind::Value) << e.what();
    for (const char* needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message '" << e.what() << "' lacks '" << needle << "'";
  }
}
