/* churnling: a short-lived process for the process-churn test (tests/tests/churn.rs).
 *
 *   churnling MS PORT MODE
 *
 * Sleeps MS milliseconds; then, by MODE:
 *   get   one HTTP/1.1 GET / to 127.0.0.1:PORT (socket events from a traced process)
 *   fork  forks a child that does the GET and exits; the parent waits for it
 *   exec  execs /bin/true (a traced process that becomes another program)
 *   quiet nothing
 * and exits. Plain C so that thousands of them cost the machine little.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void get(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        const char req[] = "GET / HTTP/1.1\r\nHost: churn\r\nUser-Agent: churnling\r\n"
                           "Connection: close\r\n\r\n";
        if (write(s, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
            char buf[4096];
            while (read(s, buf, sizeof buf) > 0) {
            }
        }
    }
    close(s);
}

int main(int argc, char **argv) {
    if (argc < 4)
        return 2;
    long ms = atol(argv[1]);
    int port = atoi(argv[2]);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (strcmp(argv[3], "get") == 0) {
        get(port);
    } else if (strcmp(argv[3], "fork") == 0) {
        pid_t kid = fork();
        if (kid == 0) {
            get(port);
            _exit(0);
        }
        if (kid > 0)
            waitpid(kid, NULL, 0);
    } else if (strcmp(argv[3], "exec") == 0) {
        execl("/bin/true", "true", (char *)NULL);
        return 1;
    }
    return 0;
}
