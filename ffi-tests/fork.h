/* Forking the child process of a two-process test, with a pipe pair to talk to it.
 * libc only: included by pipe.h (C tests) and check.hpp (C++ tests). */
#ifndef DLSLIME_FFI_TESTS_FORK_H
#define DLSLIME_FFI_TESTS_FORK_H

#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/* Forks a child that ends with `end(child(in, out))` (`exit`, or `_exit` to skip the
 * parent's atexit handlers and destructors), reading the parent's `*to_child` and writing
 * its `*from_child` (the pipe ends this leaves open in the parent). Returns the child's
 * pid, or -1 when a pipe or the fork failed. */
static inline pid_t fork_child(int (*child)(int in, int out), void (*end)(int), int *to_child,
                               int *from_child) {
  int p2c[2], c2p[2];
  if (pipe(p2c) != 0 || pipe(c2p) != 0) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(p2c[1]);
    close(c2p[0]);
    end(child(p2c[0], c2p[1]));
  }
  close(p2c[0]);
  close(c2p[1]);
  *to_child = p2c[1];
  *from_child = c2p[0];
  return pid;
}

#endif /* DLSLIME_FFI_TESTS_FORK_H */
