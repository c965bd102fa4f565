/* A Modbus server built on libmodbus (not our stack): the agent is tested against it.
 *
 *   server tcp                          listen on 127.0.0.1, a free port, print "listening PORT"
 *   server rtu DEVICE BAUD PARITY UNIT  answer UNIT on a serial device, print "listening rtu"
 *
 * The register image is fixed and known to the tests (tests/e2e/test_modbus_foreign.py);
 * addresses past the mapping are answered by libmodbus with exception 02. Writes land in
 * the mapping, so a read after a write shows what libmodbus kept.
 */
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

/* Words written out by hand: libmodbus 3.1.6's modbus_set_float_* swap the bytes of each
 * word on little-endian hosts, so they would test libmodbus, not the agent. */
static void fill(modbus_mapping_t *m) {
    uint16_t *h = m->tab_registers;
    h[0] = 0x4366; h[1] = 0x8000;            /* float32 230.5, order ABCD */
    h[2] = 0x0000; h[3] = 0x4249;            /* float32 50.25, order CDAB */
    h[4] = (uint16_t)-5;                     /* int16 -5 */
    h[5] = 4321;                             /* uint16 */
    h[6] = 0x075B; h[7] = 0xCD15;            /* uint32 123456789, ABCD */
    h[8] = 0xFFED; h[9] = 0x2979;            /* int32 -1234567, ABCD */
    h[10] = 0xC03F; h[11] = 0x0000;          /* float32 1.5, order BADC */
    h[12] = 0x0000; h[13] = 0xE8C0;          /* float32 -7.25, order DCBA */
    m->tab_input_registers[0] = 0x4148;      /* float32 12.5, ABCD */
    m->tab_input_registers[1] = 0x0000;
    m->tab_input_registers[2] = 2205;        /* 220.5 at scale 0.1 */
    m->tab_bits[5] = 1;
    m->tab_input_bits[3] = 1;
}

static int serve_tcp(modbus_mapping_t *map) {
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", 0);
    int server = modbus_tcp_listen(ctx, 8);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    struct sockaddr_in addr; socklen_t len = sizeof addr;
    getsockname(server, (struct sockaddr *)&addr, &len);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    fd_set all; FD_ZERO(&all); FD_SET(server, &all);
    int top = server;
    for (;;) {
        fd_set ready = all;
        if (select(top + 1, &ready, NULL, NULL, NULL) < 0) { if (errno == EINTR) continue; return 1; }
        for (int fd = 0; fd <= top; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            if (fd == server) {
                int client = accept(server, NULL, NULL);
                if (client >= 0) { FD_SET(client, &all); if (client > top) top = client; }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) modbus_reply(ctx, query, rc, map);
            else if (rc == -1) { close(fd); FD_CLR(fd, &all); }
        }
    }
}

static int serve_rtu(modbus_mapping_t *map, const char *dev, int baud, char parity, int unit) {
    modbus_t *ctx = modbus_new_rtu(dev, baud, parity, 8, 1);
    if (ctx == NULL || modbus_set_slave(ctx, unit) < 0 || modbus_connect(ctx) < 0) {
        fprintf(stderr, "rtu %s: %s\n", dev, modbus_strerror(errno)); return 1;
    }
    printf("listening rtu\n");
    fflush(stdout);
    uint8_t query[MODBUS_RTU_MAX_ADU_LENGTH];
    for (;;) {
        int rc = modbus_receive(ctx, query);
        if (rc > 0) modbus_reply(ctx, query, rc, map);  /* 0: for another unit; -1: a bad frame */
    }
}

int main(int argc, char **argv) {
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 100, 0, 100, 0, 120, 0, 120);
    if (map == NULL) return 1;
    fill(map);
    if (argc == 2 && strcmp(argv[1], "tcp") == 0) return serve_tcp(map);
    if (argc == 6 && strcmp(argv[1], "rtu") == 0)
        return serve_rtu(map, argv[2], atoi(argv[3]), argv[4][0], atoi(argv[5]));
    fprintf(stderr, "usage: server tcp | server rtu DEVICE BAUD PARITY UNIT\n");
    return 2;
}
