/* The tiny workload image of the real-node test (tests/cluster/test_real_node.py): prints who
 * it runs as and whether its root filesystem is writable, echoes its arguments, and exits with
 * the status given by the environment variable PROBE_EXIT (default 0). Static, so the image
 * holds this one file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int fd = open("/probe-write-test", O_WRONLY | O_CREAT | O_EXCL, 0600);
    const char *root = fd >= 0 ? "writable" : (errno == EROFS ? "read-only" : strerror(errno));
    if (fd >= 0) {
        close(fd);
        unlink("/probe-write-test");
    }
    printf("uid=%d gid=%d root=%s args=", (int)getuid(), (int)getgid(), root);
    for (int i = 1; i < argc; i++)
        printf("%s%s", i > 1 ? "," : "", argv[i]);
    printf("\n");
    fflush(stdout);
    const char *code = getenv("PROBE_EXIT");
    return code ? atoi(code) : 0;
}
