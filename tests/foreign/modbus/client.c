/* A Modbus client built on libmodbus (not our stack): it reads our simulators.
 *
 *   client tcp HOST PORT UNIT FC ADDRESS COUNT
 *   client rtu DEVICE BAUD PARITY UNIT FC ADDRESS COUNT
 *
 * FC 1, 2, 3 or 4. Prints the registers (or bits) as decimal numbers, one line, space
 * separated; on a failure "error: " and libmodbus's reason, exit 1.
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    modbus_t *ctx;
    int i;
    if (argc == 8 && strcmp(argv[1], "tcp") == 0) {
        ctx = modbus_new_tcp(argv[2], atoi(argv[3]));
        i = 4;
    } else if (argc == 9 && strcmp(argv[1], "rtu") == 0) {
        ctx = modbus_new_rtu(argv[2], atoi(argv[3]), argv[4][0], 8, 1);
        i = 5;
    } else {
        fprintf(stderr, "usage: client tcp HOST PORT UNIT FC ADDRESS COUNT | "
                        "client rtu DEVICE BAUD PARITY UNIT FC ADDRESS COUNT\n");
        return 2;
    }
    int unit = atoi(argv[i]), fc = atoi(argv[i + 1]), address = atoi(argv[i + 2]);
    int count = atoi(argv[i + 3]);
    if (ctx == NULL || modbus_set_slave(ctx, unit) < 0 || modbus_connect(ctx) < 0) {
        printf("error: %s\n", modbus_strerror(errno));
        return 1;
    }
    modbus_set_response_timeout(ctx, 2, 0);
    uint16_t regs[125];
    uint8_t bits[2000];
    int rc = -1;
    if (fc == 1) rc = modbus_read_bits(ctx, address, count, bits);
    if (fc == 2) rc = modbus_read_input_bits(ctx, address, count, bits);
    if (fc == 3) rc = modbus_read_registers(ctx, address, count, regs);
    if (fc == 4) rc = modbus_read_input_registers(ctx, address, count, regs);
    if (rc != count) {
        printf("error: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int k = 0; k < count; k++)
        printf(k ? " %u" : "%u", fc <= 2 ? (unsigned)bits[k] : (unsigned)regs[k]);
    printf("\n");
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}
