/*
 * edgetwin's plugin for the node's own mosquitto: the node's rules for who connects and
 * what each client may do, decided inside mosquitto, and each refusal and denial told.
 *
 * Why a plugin: mosquitto 2.0 logs a wrong password, an unknown user and an anonymous
 * client alike ("not authorised"), a denied PUBLISH only at its debug level (with every
 * other packet), and a denied SUBSCRIBE not at all; and it has no per-client message
 * rate. A plugin that only watched could not see the outcome either: the first callback
 * that does not defer decides, and mosquitto's own password and ACL files come after any
 * plugin's. So this plugin is the authority, with the rules of edgetwin.auth (the node
 * tests both brokers against the same cases), and it says what it refused on mosquitto's
 * log, which the node already reads:
 *
 *   edgetwin: refused <reason> <client id> <user name or topic>
 *   edgetwin: denied <publish|subscribe> <client id> <user name> <topic>
 *   edgetwin: rate_limited <count> <client id>
 *   edgetwin: rules <version>              the rules of that version are in force
 *
 * Fields are percent-escaped (every byte outside '!'..'~', and '%'), an empty one is "-".
 * A rate-limited client's publications are counted and told at most once a second: the
 * first one over in a second is also answered 429 on its result topic, as the twin does.
 *
 * The node writes the rules to the file named by `plugin_opt_rules` and sends SIGHUP when
 * they change; one line each, fields separated by tabs:
 *
 *   version <n>                           told back once the rules are read
 *   auth <1|0>                            0: no broker.auth, everyone may do everything
 *   rate <messages per second> <burst>    per client; admins and mappers logged in: none
 *   user <name> <admin|mapper|device|none> <protocol or device id> <hash or ->
 *   device <namespace/name> <protocol>
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define DEVICE_PREFIX "$hw/events/device/"
#define MAPPER_PREFIX "$hw/events/mapper/"
#define FIELD_MAX 1024 /* escaped fields longer than this are cut */
#define MOST_HASH_BYTES 64
#define MOST_ITERATIONS 10000000L

enum role { ROLE_NONE, ROLE_ADMIN, ROLE_MAPPER, ROLE_DEVICE };

struct user {
	char *name;
	enum role role;
	char *scope; /* a mapper's protocol, a device's id */
	char *hash;  /* NULL: no password login (a certificate's name) */
};

struct device {
	char *id;
	char *protocol;
};

struct rules {
	bool auth;
	double rate, burst;
	struct user *users; /* sorted by name */
	size_t user_count;
	struct device *devices; /* sorted by id */
	size_t device_count;
	const char *version;
	char *text; /* the file's text: every string above points into it */
};

/* A client id's state: who owns its session, and its message budget. */
struct client {
	char *id;
	char *owner; /* the user whose session this id is; NULL when nobody logged in */
	const struct mosquitto *connection;
	bool trusted; /* logged in as an admin or a mapper: no rate */
	double tokens, filled;
	unsigned long dropped; /* over its rate and not told yet */
	double told;
	struct client *next;
};

static struct {
	mosquitto_plugin_id_t *id;
	char *path;
	struct rules rules;
	struct client **buckets;
	size_t bucket_count, client_count;
	const struct mosquitto *leaving; /* just disconnected: its next publish is its Will */
	double flushed;
} plugin;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* `text` percent-escaped into `out` (FIELD_MAX * 3 + 1 bytes); "-" when empty or NULL. */
static const char *escaped(const char *text, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	if(!text || !*text) return "-";
	char *at = out;
	for(size_t i = 0; text[i] && i < FIELD_MAX; i++){
		unsigned char c = (unsigned char)text[i];
		if(c < '!' || c > '~' || c == '%' || (i == 0 && c == '-' && !text[1])){
			*at++ = '%';
			*at++ = hex[c >> 4];
			*at++ = hex[c & 15];
		}else{
			*at++ = (char)c;
		}
	}
	*at = '\0';
	return out;
}

/* --- the rules file --------------------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct user *)a)->name, ((const struct user *)b)->name);
}

static int by_id(const void *a, const void *b)
{
	return strcmp(((const struct device *)a)->id, ((const struct device *)b)->id);
}

static void rules_free(struct rules *rules)
{
	free(rules->users);
	free(rules->devices);
	free(rules->text);
	memset(rules, 0, sizeof(*rules));
}

/* Split `line` at tabs into at most `most` fields; the count. */
static int fields(char *line, char **out, int most)
{
	int count = 0;
	while(count < most){
		out[count++] = line;
		line = strchr(line, '\t');
		if(!line) break;
		*line++ = '\0';
	}
	return count;
}

static int rules_read(const char *path, struct rules *out)
{
	FILE *file = fopen(path, "rb");
	if(!file){
		mosquitto_log_printf(MOSQ_LOG_ERR, "edgetwin plugin: cannot read %s: %s", path, strerror(errno));
		return MOSQ_ERR_UNKNOWN;
	}
	struct rules rules = {.auth = true, .rate = 1e12, .burst = 1e12};
	size_t size = 0, capacity = 0, lines = 1;
	char chunk[65536];
	size_t got;
	while((got = fread(chunk, 1, sizeof(chunk), file)) > 0){
		if(size + got + 1 > capacity){
			capacity = (size + got + 1) * 2;
			char *grown = realloc(rules.text, capacity);
			if(!grown){
				fclose(file);
				rules_free(&rules);
				return MOSQ_ERR_NOMEM;
			}
			rules.text = grown;
		}
		memcpy(rules.text + size, chunk, got);
		size += got;
	}
	fclose(file);
	if(!rules.text){
		rules.text = calloc(1, 1);
		if(!rules.text) return MOSQ_ERR_NOMEM;
	}
	rules.text[size] = '\0';
	for(size_t i = 0; i < size; i++){
		lines += rules.text[i] == '\n';
	}
	/* As many of each as the file has lines, at most. */
	rules.users = calloc(lines, sizeof(struct user));
	rules.devices = calloc(lines, sizeof(struct device));
	if(!rules.users || !rules.devices){
		rules_free(&rules);
		return MOSQ_ERR_NOMEM;
	}
	char *line = rules.text;
	while(line && *line){
		char *end = strchr(line, '\n');
		if(end) *end++ = '\0';
		char *f[5];
		int n = fields(line, f, 5);
		if(n == 2 && !strcmp(f[0], "version")){
			rules.version = f[1];
		}else if(n == 2 && !strcmp(f[0], "auth")){
			rules.auth = strcmp(f[1], "0") != 0;
		}else if(n == 3 && !strcmp(f[0], "rate")){
			rules.rate = strtod(f[1], NULL);
			rules.burst = strtod(f[2], NULL);
		}else if(n == 5 && !strcmp(f[0], "user")){
			struct user *user = &rules.users[rules.user_count++];
			user->name = f[1];
			user->role = !strcmp(f[2], "admin") ? ROLE_ADMIN
				: !strcmp(f[2], "mapper") ? ROLE_MAPPER
				: !strcmp(f[2], "device") ? ROLE_DEVICE : ROLE_NONE;
			user->scope = f[3];
			user->hash = strcmp(f[4], "-") ? f[4] : NULL;
		}else if(n == 3 && !strcmp(f[0], "device")){
			rules.devices[rules.device_count].id = f[1];
			rules.devices[rules.device_count++].protocol = f[2];
		}else if(*line && *line != '#'){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "edgetwin plugin: a line of %s not understood", path);
		}
		line = end;
	}
	qsort(rules.users, rules.user_count, sizeof(struct user), by_name);
	qsort(rules.devices, rules.device_count, sizeof(struct device), by_id);
	*out = rules;
	char v[FIELD_MAX * 3 + 1];
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "edgetwin: rules %s", escaped(rules.version, v));
	return MOSQ_ERR_SUCCESS;
}

static const struct user *user_named(const char *name)
{
	if(!name) return NULL;
	struct user key = {.name = (char *)name};
	return bsearch(&key, plugin.rules.users, plugin.rules.user_count, sizeof(struct user), by_name);
}

static const char *protocol_of(const char *id)
{
	struct device key = {.id = (char *)id};
	const struct device *found = bsearch(
		&key, plugin.rules.devices, plugin.rules.device_count, sizeof(struct device), by_id);
	return found ? found->protocol : NULL;
}

/* --- clients by id ---------------------------------------------------------------------- */

static size_t hash_of(const char *text)
{
	size_t hash = 14695981039346656037u;
	for(; *text; text++){
		hash = (hash ^ (unsigned char)*text) * 1099511628211u;
	}
	return hash;
}

static struct client **slot_of(const char *id)
{
	struct client **slot = &plugin.buckets[hash_of(id) % plugin.bucket_count];
	while(*slot && strcmp((*slot)->id, id)){
		slot = &(*slot)->next;
	}
	return slot;
}

static void grow(void)
{
	size_t count = plugin.bucket_count * 2;
	struct client **buckets = calloc(count, sizeof(struct client *));
	if(!buckets) return; /* longer chains, still right */
	for(size_t i = 0; i < plugin.bucket_count; i++){
		struct client *c = plugin.buckets[i];
		while(c){
			struct client *next = c->next;
			size_t at = hash_of(c->id) % count;
			c->next = buckets[at];
			buckets[at] = c;
			c = next;
		}
	}
	free(plugin.buckets);
	plugin.buckets = buckets;
	plugin.bucket_count = count;
}

/* The state of `id`, made if it is new; NULL if out of memory. */
static struct client *client_of(const char *id)
{
	struct client **slot = slot_of(id);
	if(*slot) return *slot;
	struct client *c = calloc(1, sizeof(struct client));
	if(!c) return NULL;
	c->id = strdup(id);
	if(!c->id){
		free(c);
		return NULL;
	}
	c->tokens = plugin.rules.burst;
	c->filled = now();
	c->told = -1e9;
	*slot = c;
	if(++plugin.client_count > plugin.bucket_count * 2) grow();
	return c;
}

static void client_forget(const char *id)
{
	struct client **slot = slot_of(id);
	struct client *c = *slot;
	if(!c) return;
	*slot = c->next;
	free(c->owner);
	free(c->id);
	free(c);
	plugin.client_count--;
}

/* --- what the node reads ---------------------------------------------------------------- */

static void tell_refused(const char *reason, const char *client, const char *detail)
{
	char a[FIELD_MAX * 3 + 1], b[FIELD_MAX * 3 + 1];
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "edgetwin: refused %s %s %s", reason,
		escaped(client, a), escaped(detail, b));
}

static void tell_denied(const char *action, const char *client, const char *user, const char *topic)
{
	char a[FIELD_MAX * 3 + 1], b[FIELD_MAX * 3 + 1], c[FIELD_MAX * 3 + 1];
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "edgetwin: denied %s %s %s %s", action,
		escaped(client, a), escaped(user, b), escaped(topic, c));
}

static void tell_limited(struct client *c)
{
	char a[FIELD_MAX * 3 + 1];
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "edgetwin: rate_limited %lu %s", c->dropped, escaped(c->id, a));
	c->dropped = 0;
}

/* A twin request over the rate gets a 429 on its result topic, as any refused request. */
static void answer_too_many(const char *topic)
{
	static const char *const kinds[] = {"/twin/update", "/twin/get", "/state/update"};
	static const char body[] = "{\"event_id\":\"\",\"timestamp\":%lld,\"code\":429,"
		"\"reason\":\"over this client's message rate; slow down\"}";
	size_t length = strlen(topic);
	if(strncmp(topic, DEVICE_PREFIX, strlen(DEVICE_PREFIX))) return;
	for(size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++){
		size_t kind = strlen(kinds[i]);
		if(length > kind && !strcmp(topic + length - kind, kinds[i])){
			char result[FIELD_MAX + 16], payload[sizeof(body) + 24];
			struct timespec ts;
			if(length > FIELD_MAX) return;
			clock_gettime(CLOCK_REALTIME, &ts);
			long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
			snprintf(result, sizeof(result), "%s/result", topic);
			int size = snprintf(payload, sizeof(payload), body, ms);
			mosquitto_broker_publish_copy(NULL, result, size, payload, 0, false, NULL);
			return;
		}
	}
}

/* --- the decisions ---------------------------------------------------------------------- */

static bool check_password(const char *entry, const char *password)
{
	unsigned char salt[256], digest[256], given[MOST_HASH_BYTES];
	char copy[1024];
	if(!entry || !password || strlen(entry) >= sizeof(copy)) return false;
	strcpy(copy, entry);
	char *parts[5];
	int n = 0;
	for(char *at = copy; n < 5 && at; n++){
		parts[n] = at;
		at = strchr(at, '$');
		if(at) *at++ = '\0';
	}
	/* "$7$<iterations>$<salt>$<hash>" (PBKDF2-SHA512) or "$6$<salt>$<hash>" (SHA-512) */
	bool pbkdf2 = n == 5 && !strcmp(parts[1], "7");
	bool sha512 = n == 4 && !strcmp(parts[1], "6");
	if(*parts[0] || (!pbkdf2 && !sha512)) return false;
	const char *salt64 = parts[pbkdf2 ? 3 : 2], *hash64 = parts[pbkdf2 ? 4 : 3];
	size_t salt_chars = strlen(salt64), hash_chars = strlen(hash64);
	if(salt_chars % 4 || hash_chars % 4 || salt_chars / 4 * 3 > sizeof(salt) || hash_chars / 4 * 3 > sizeof(digest)){
		return false;
	}
	int salt_len = EVP_DecodeBlock(salt, (const unsigned char *)salt64, (int)salt_chars);
	int hash_len = EVP_DecodeBlock(digest, (const unsigned char *)hash64, (int)hash_chars);
	if(salt_len < 0 || hash_len < 0) return false;
	for(size_t i = salt_chars; i > 0 && salt64[i - 1] == '='; i--) salt_len--;
	for(size_t i = hash_chars; i > 0 && hash64[i - 1] == '='; i--) hash_len--;
	if(hash_len != MOST_HASH_BYTES) return false;
	if(pbkdf2){
		char *end;
		long iterations = strtol(parts[2], &end, 10);
		if(*end || iterations < 1 || iterations > MOST_ITERATIONS) return false;
		if(!PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len, (int)iterations,
				EVP_sha512(), hash_len, given)){
			return false;
		}
	}else{
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL)
			&& EVP_DigestUpdate(ctx, password, strlen(password))
			&& EVP_DigestUpdate(ctx, salt, (size_t)salt_len)
			&& EVP_DigestFinal_ex(ctx, given, NULL);
		EVP_MD_CTX_free(ctx);
		if(!ok) return false;
	}
	return CRYPTO_memcmp(given, digest, (size_t)hash_len) == 0;
}

static int on_basic_auth(int event, void *data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = data;
	const char *id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	plugin.leaving = NULL;
	const struct user *user = user_named(ed->username);
	bool known = user && user->hash && ed->password && check_password(user->hash, ed->password);
	if(plugin.rules.auth && (!ed->username || !*ed->username)){
		tell_refused("no_credentials", id, NULL);
		return MOSQ_ERR_AUTH;
	}
	if(plugin.rules.auth && !known){
		tell_refused("bad_credentials", id, ed->username);
		return MOSQ_ERR_AUTH;
	}
	struct client *c = id ? client_of(id) : NULL;
	if(!c) return id ? MOSQ_ERR_NOMEM : MOSQ_ERR_SUCCESS;
	c->connection = ed->client;
	c->trusted = known && (user->role == ROLE_ADMIN || user->role == ROLE_MAPPER);
	if(!plugin.rules.auth){
		return MOSQ_ERR_SUCCESS; /* everyone may; the node's own clients have no rate */
	}
	if(c->owner && strcmp(c->owner, ed->username)){
		tell_refused("client_id_taken", id, ed->username);
		return MOSQ_ERR_AUTH;
	}
	if(!c->owner){
		c->owner = strdup(ed->username);
		if(!c->owner) return MOSQ_ERR_NOMEM;
	}
	return MOSQ_ERR_SUCCESS;
}

static bool mapper_allows(const char *protocol, int access, const char *topic)
{
	size_t plen = strlen(protocol);
	if(topic[0] != '$') return true;
	if(!strncmp(topic, MAPPER_PREFIX, strlen(MAPPER_PREFIX))
			&& !strncmp(topic + strlen(MAPPER_PREFIX), protocol, plen)
			&& topic[strlen(MAPPER_PREFIX) + plen] == '/'){
		size_t length = strlen(topic);
		static const char result[] = "/spec/result";
		return access != MOSQ_ACL_WRITE
			|| (length >= strlen(result) && !strcmp(topic + length - strlen(result), result));
	}
	if(strncmp(topic, DEVICE_PREFIX, strlen(DEVICE_PREFIX))) return false;
	const char *ns = topic + strlen(DEVICE_PREFIX);
	const char *slash = strchr(ns, '/');
	const char *name = slash ? slash + 1 : ns + strlen(ns);
	size_t ns_len = slash ? (size_t)(slash - ns) : strlen(ns);
	const char *name_end = strchr(name, '/');
	size_t name_len = name_end ? (size_t)(name_end - name) : strlen(name);
	bool ns_plus = ns_len == 1 && ns[0] == '+', name_plus = name_len == 1 && name[0] == '+';
	if(access == MOSQ_ACL_SUBSCRIBE && (ns_plus || name_plus)){
		/* any device's, delivered only for its own */
		return !(ns_len == 1 && ns[0] == '#') && !(name_len == 1 && name[0] == '#');
	}
	char id[2 * FIELD_MAX + 2];
	if(ns_len + name_len + 2 > sizeof(id)) return false;
	memcpy(id, ns, ns_len);
	id[ns_len] = '/';
	memcpy(id + ns_len + 1, name, name_len);
	id[ns_len + 1 + name_len] = '\0';
	const char *own = protocol_of(id);
	return own && !strcmp(own, protocol);
}

static bool allows(const struct user *user, int access, const char *topic)
{
	if(!plugin.rules.auth) return true;
	switch(user ? user->role : ROLE_NONE){
		case ROLE_ADMIN:
			return true;
		case ROLE_DEVICE: {
			size_t plen = strlen(DEVICE_PREFIX), slen = strlen(user->scope);
			return !strncmp(topic, DEVICE_PREFIX, plen) && !strncmp(topic + plen, user->scope, slen)
				&& topic[plen + slen] == '/';
		}
		case ROLE_MAPPER:
			return mapper_allows(user->scope, access, topic);
		default:
			return false;
	}
}

/* Whether one more publication of `client` is within its rate (a token bucket). */
static bool admit(struct mosquitto *client, const char *topic)
{
	const char *id = mosquitto_client_id(client);
	struct client *c = id ? client_of(id) : NULL;
	if(!c) return true;
	if(c->connection != client){ /* a certificate's name: no password asked */
		const struct user *user = user_named(mosquitto_client_username(client));
		c->connection = client;
		c->trusted = plugin.rules.auth && user && (user->role == ROLE_ADMIN || user->role == ROLE_MAPPER);
	}
	if(c->trusted) return true; /* a mapper's reports for many devices come from one client */
	double t = now();
	c->tokens += (t - c->filled) * plugin.rules.rate;
	if(c->tokens > plugin.rules.burst) c->tokens = plugin.rules.burst;
	c->filled = t;
	if(c->tokens >= 1.0){
		c->tokens -= 1.0;
		return true;
	}
	c->dropped++;
	if(t - c->told >= 1.0){
		c->told = t;
		tell_limited(c);
		answer_too_many(topic);
	}
	return false;
}

static int on_acl_check(int event, void *data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = data;
	(void)event;
	(void)userdata;
	bool will = ed->client == plugin.leaving;
	plugin.leaving = NULL;
	if(ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	const char *username = mosquitto_client_username(ed->client);
	const struct user *user = user_named(username);
	if(ed->access == MOSQ_ACL_WRITE && !will && !admit(ed->client, ed->topic)){
		return MOSQ_ERR_ACL_DENIED;
	}
	if(allows(user, ed->access, ed->topic)) return MOSQ_ERR_SUCCESS;
	const char *id = mosquitto_client_id(ed->client);
	if(will){
		tell_refused("will_denied", id, ed->topic);
	}else if(ed->access == MOSQ_ACL_WRITE){
		tell_denied("publish", id, username, ed->topic);
	}else if(ed->access == MOSQ_ACL_SUBSCRIBE){
		tell_denied("subscribe", id, username, ed->topic);
	} /* a receive is filtered, not denied: wildcards are fine */
	return MOSQ_ERR_ACL_DENIED;
}

static int on_disconnect(int event, void *data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = data;
	const char *id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	plugin.leaving = ed->client; /* mosquitto checks its Will next */
	struct client *c = id ? *slot_of(id) : NULL;
	if(!c || c->connection != ed->client) return MOSQ_ERR_SUCCESS; /* taken over since */
	if(c->dropped) tell_limited(c);
	if(mosquitto_client_clean_session(ed->client)){
		client_forget(id);
	}else{
		c->tokens = plugin.rules.burst;
		c->connection = NULL;
	}
	return MOSQ_ERR_SUCCESS;
}

/* Once a second: the counts of drops not told yet. */
static int on_tick(int event, void *data, void *userdata)
{
	(void)event;
	(void)data;
	(void)userdata;
	double t = now();
	if(t - plugin.flushed < 1.0) return MOSQ_ERR_SUCCESS;
	plugin.flushed = t;
	for(size_t i = 0; i < plugin.bucket_count; i++){
		for(struct client *c = plugin.buckets[i]; c; c = c->next){
			if(c->dropped) tell_limited(c);
		}
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *data, void *userdata)
{
	struct rules rules;
	(void)event;
	(void)data;
	(void)userdata;
	if(rules_read(plugin.path, &rules) != MOSQ_ERR_SUCCESS){
		return MOSQ_ERR_SUCCESS; /* the rules before stay */
	}
	rules_free(&plugin.rules);
	plugin.rules = rules;
	return MOSQ_ERR_SUCCESS;
}

/* --- mosquitto's entry points ----------------------------------------------------------- */

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
	struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	memset(&plugin, 0, sizeof(plugin));
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "rules")) plugin.path = strdup(options[i].value);
	}
	if(!plugin.path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "edgetwin plugin: plugin_opt_rules is not set");
		return MOSQ_ERR_INVAL;
	}
	plugin.bucket_count = 1024;
	plugin.buckets = calloc(plugin.bucket_count, sizeof(struct client *));
	if(!plugin.buckets) return MOSQ_ERR_NOMEM;
	int rc = rules_read(plugin.path, &plugin.rules);
	if(rc) return rc;
	plugin.id = identifier;
	mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, NULL);
	mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin.id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin.id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	mosquitto_callback_unregister(plugin.id, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(plugin.id, MOSQ_EVT_RELOAD, on_reload, NULL);
	for(size_t i = 0; i < plugin.bucket_count; i++){
		while(plugin.buckets[i]) client_forget(plugin.buckets[i]->id);
	}
	free(plugin.buckets);
	rules_free(&plugin.rules);
	free(plugin.path);
	return MOSQ_ERR_SUCCESS;
}
