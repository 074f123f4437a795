/* Vendored from the sibling ../shared/tools/nouring.c (unchanged below this comment), so that CI
 * needs nothing outside this repository. x86_64 only: elsewhere the filter allows every call. */
/* nouring: run a command with io_uring_setup/enter/register denied (EPERM), as Docker's default
 * seccomp profile does since Docker 25. Usage: nouring CMD [ARGS...] */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: nouring CMD [ARGS...]\n"); return 2; }
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 425, 3, 0), /* io_uring_setup */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 426, 2, 0), /* io_uring_enter */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 427, 1, 0), /* io_uring_register */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("nouring: seccomp"); return 1;
    }
    execvp(argv[1], argv + 1);
    perror("nouring: exec"); return 127;
}
