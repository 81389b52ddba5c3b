/* Placeholder for the opcua-adapter: an OPC UA server (open62541) on port
 * 4840 with the standard namespace, so OPC UA clients of the plant can
 * already connect; the adapter that maps MQTT topics to variables replaces
 * it when it lands. */
#include <open62541/server.h>
#include <open62541/server_config_default.h>
#include <signal.h>

static volatile UA_Boolean running = true;

static void stop(int sig)
{
    (void)sig;
    running = false;
}

int main(void)
{
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    UA_Server *server = UA_Server_new();
    if (!server)
        return 1;
    UA_ServerConfig_setDefault(UA_Server_getConfig(server));
    UA_StatusCode rc = UA_Server_run(server, &running);
    UA_Server_delete(server);
    return rc == UA_STATUSCODE_GOOD ? 0 : 1;
}
