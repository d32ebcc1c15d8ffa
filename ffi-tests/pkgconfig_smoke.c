/*
 * Smoke test for an installed libdlslime (cargo cinstall): built only with
 * `pkg-config --cflags --libs dlslime`. Prints the version and does a memory-pool round
 * trip (register, look up, mr_info, unregister).
 */
#include <dlslime.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  printf("dlslime %s (header %d.%d.%d)\n", dlslime_version(), DLSLIME_VERSION_MAJOR,
         DLSLIME_VERSION_MINOR, DLSLIME_VERSION_PATCH);
  if (dlslime_version_number() != (uint32_t)DLSLIME_VERSION_NUMBER) {
    fprintf(stderr, "library version does not match the header\n");
    return 1;
  }
  static char region[4096];
  dlslime_memory_pool_t *pool = NULL;
  dlslime_mr_handle_t h = 99, h2 = 99;
  char *info = NULL;
  int ok = dlslime_memory_pool_new(&pool) == DLSLIME_STATUS_OK &&
           dlslime_memory_pool_register(pool, "region", region, sizeof region, &h) == DLSLIME_STATUS_OK &&
           dlslime_memory_pool_handle(pool, "region", &h2) == DLSLIME_STATUS_OK && h == h2 &&
           dlslime_memory_pool_mr_info(pool, &info) == DLSLIME_STATUS_OK && strstr(info, "\"region\"") &&
           strstr(info, "\"length\":4096") &&
           dlslime_memory_pool_unregister(pool, h) == DLSLIME_STATUS_OK &&
           dlslime_memory_pool_handle(pool, "region", &h2) == DLSLIME_STATUS_UNKNOWN_HANDLE;
  if (info) printf("mr_info: %s\n", info);
  dlslime_string_free(info);
  dlslime_memory_pool_free(pool);
  printf("memory pool round trip: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
