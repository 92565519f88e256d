/* conditions.c: whether the device may train now (DESIGN 13): power from
 * <sysfs>/class/power_supply (AC online, or a battery at or above a threshold), temperature from
 * <sysfs>/class/thermal, the load average, a time-of-day window. Reads small text files only;
 * every path comes from pk_agent_conditions, so tests fake a phone with a directory. */
#include "pk_agent.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

pk_agent_conditions pk_agent_conditions_default(void)
{
    pk_agent_conditions c;
    memset(&c, 0, sizeof c);
    strcpy(c.sysfs_root, "/sys");
    strcpy(c.loadavg_path, "/proc/loadavg");
    c.min_battery = 80;
    c.max_temp_c = 45.0;
    c.max_load = 1.0;
    c.window_start = c.window_end = -1;
    c.now_minutes = -1;
    return c;
}

/* The first line of dir/name/file, without its newline; -1 if it cannot be read. */
static int read_attr(const char *dir, const char *name, const char *file, char *out, size_t n)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/%s/%s", dir, name, file);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int ok = fgets(out, (int)n, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

typedef struct power {
    int supplies;    /* entries seen */
    int ac_online;   /* a Mains/USB/Wireless supply reports online = 1 */
    int batteries;   /* Battery entries with a capacity */
    int max_battery; /* the fullest battery, percent */
} power;

static void read_power(const char *root, power *p)
{
    char dir[1100], type[64], val[64];
    snprintf(dir, sizeof dir, "%s/class/power_supply", root);
    memset(p, 0, sizeof *p);
    p->max_battery = -1;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || read_attr(dir, de->d_name, "type", type, sizeof type) != 0)
            continue;
        p->supplies++;
        if (!strcmp(type, "Battery")) {
            if (read_attr(dir, de->d_name, "capacity", val, sizeof val) == 0) {
                p->batteries++;
                int cap = atoi(val);
                p->max_battery = cap > p->max_battery ? cap : p->max_battery;
            }
        } else if (read_attr(dir, de->d_name, "online", val, sizeof val) == 0 && atoi(val) == 1) {
            p->ac_online = 1;
        }
    }
    if (d != NULL)
        closedir(d);
}

/* The hottest thermal zone in degrees Celsius (sysfs gives millidegrees); 0 with none. */
static double max_temp(const char *root, char *zone, size_t n)
{
    char dir[1100], val[64];
    double hottest = -1e9;
    snprintf(dir, sizeof dir, "%s/class/thermal", root);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "thermal_zone", 12) != 0 ||
            read_attr(dir, de->d_name, "temp", val, sizeof val) != 0)
            continue;
        double c = atof(val) / 1000.0;
        if (c > hottest) {
            hottest = c;
            snprintf(zone, n, "%s", de->d_name);
        }
    }
    if (d != NULL)
        closedir(d);
    return hottest;
}

static double load_average(const char *path)
{
    FILE *f = fopen(path, "r");
    double l = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lf", &l) != 1)
        l = 0;
    fclose(f);
    return l;
}

static int minutes_now(const pk_agent_conditions *c)
{
    if (c->now_minutes >= 0)
        return c->now_minutes;
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    return tm.tm_hour * 60 + tm.tm_min;
}

static int in_window(const pk_agent_conditions *c)
{
    if (c->window_start < 0 || c->window_end < 0)
        return 1;
    int m = minutes_now(c);
    if (c->window_start <= c->window_end)
        return m >= c->window_start && m < c->window_end;
    return m >= c->window_start || m < c->window_end; /* spans midnight */
}

int pk_agent_conditions_ok(const pk_agent_conditions *c, double own_load, char *why, size_t n)
{
    power p;
    char zone[300] = "";
    read_power(c->sysfs_root, &p);
    if (p.supplies > 0 && !p.ac_online && p.batteries > 0 && p.max_battery < c->min_battery) {
        snprintf(why, n, "on battery at %d%% (trains on AC or at %d%% and above)", p.max_battery,
                 c->min_battery);
        return 0;
    }
    double t = max_temp(c->sysfs_root, zone, sizeof zone);
    if (zone[0] && t >= c->max_temp_c) {
        snprintf(why, n, "%s at %.1f C (limit %.1f C)", zone, t, c->max_temp_c);
        return 0;
    }
    double l = load_average(c->loadavg_path) - own_load;
    if (l >= c->max_load) {
        snprintf(why, n, "load average %.2f (limit %.2f)", l, c->max_load);
        return 0;
    }
    if (!in_window(c)) {
        snprintf(why, n, "outside the time window %02d:%02d-%02d:%02d", c->window_start / 60,
                 c->window_start % 60, c->window_end / 60, c->window_end % 60);
        return 0;
    }
    snprintf(why, n, "%s",
             p.ac_online || p.supplies == 0 ? "on AC, idle and cool"
                                            : "battery charged, idle and cool");
    return 1;
}

pk_status pk_agent_model_bytes(const char *model_dir, double state, int frozen, uint64_t *bytes,
                               char *err, size_t errlen)
{
    char path[1400];
    uint64_t total = 0;
    DIR *d = opendir(model_dir);
    struct dirent *de;
    *bytes = 0;
    if (d == NULL) {
        pk_seterr(err, errlen, "%s: %s", model_dir, strerror(errno));
        return PK_ERR_IO;
    }
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        struct stat sb;
        if (l < 12 || strcmp(de->d_name + l - 12, ".safetensors") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", model_dir, de->d_name);
        if (stat(path, &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    if (total == 0) {
        pk_seterr(err, errlen, "%s: no .safetensors files", model_dir);
        return PK_ERR_NOTFOUND;
    }
    *bytes = total + total / 10 + (uint64_t)(state * (double)total) +
             (frozen ? pk_model_frozen_cap(total) : 0) + (24u << 20);
    return PK_OK;
}
