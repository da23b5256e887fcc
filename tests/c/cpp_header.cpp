// The header is C++-compatible (cpp_compat: an extern "C" guard): tests/c_abi.rs compiles this
// with -Wall -Wextra -Wpedantic -Werror and links it against the library.
#include "dualwrite.h"

#include <cstdio>
#include <cstring>

int main() {
    dw_bridge *bridge = nullptr;
    char *out = nullptr;
    // Linkage check: these resolve to the C symbols only if the declarations are extern "C".
    dw_result rc = dw_get(bridge, "users", "k", &out);
    if (rc != DW_NULL_PARAMETER || out != nullptr) {
        std::fprintf(stderr, "dw_get(NULL) returned %d\n", static_cast<int>(rc));
        return 1;
    }
    dw_string_free(out);
    dw_bridge_free(bridge);
    std::printf("cpp_header: %s %s\n", dw_version(), dw_result_str(rc));
    return std::strlen(dw_last_error_message()) > 0 ? 0 : 1;
}
