/* ERT_ASAN is defined when AddressSanitizer instruments this build (GCC or clang). Code
 * that would map memory takes it from the heap instead there, where ASan guards its
 * edges: a read past a mapped block stays silent up to the page's end. */
#ifndef ERT_SANITIZER_H
#define ERT_SANITIZER_H

#if defined(__SANITIZE_ADDRESS__)
#define ERT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ERT_ASAN 1
#endif
#endif

#endif
