// The one exception type the library throws for everything a user can cause (files, options,
// requests); its message names the file, tensor, option or request at fault.
#pragma once

#include <stdexcept>
#include <string>

namespace nanoinfer {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace nanoinfer
