/* curl_dl_fake.c: a shared library with libcurl's SONAME as its file name but none of curl's
 * functions. test_curl_dl puts its folder first on LD_LIBRARY_PATH to see how pocketllm fails
 * when the libcurl it finds cannot be used. */
int pk_fake_curl(void);

int pk_fake_curl(void)
{
    return 0;
}
