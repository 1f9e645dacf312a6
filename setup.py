"""lbfast: XDP/eBPF L4 and Cython L7 load balancer for bare-metal Linux hosts."""
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

extensions = [
    Extension("lbfast._maglev", ["lbfast/_maglev.pyx"]),
    Extension("lbfast._proxy_header", ["lbfast/_proxy_header.pyx"]),
    Extension("lbfast._tcpprobe", ["lbfast/_tcpprobe.pyx"]),
    Extension("lbfast.l7._http", ["lbfast/l7/_http.pyx"]),
    Extension("lbfast.l7._cookie", ["lbfast/l7/_cookie.pyx"]),
    Extension("lbfast.l7._tickets", ["lbfast/l7/_tickets.pyx"], libraries=["ssl", "crypto"]),
]

setup(
    name="lbfast",
    version="0.1.0",
    packages=find_packages(include=["lbfast", "lbfast.*", "control", "control.*"]),
    # lbfast/bpf_src is a link to bpf/: the wheel carries the XDP program's C sources as
    # files, and the loader finds them beside the package wherever it is installed.
    package_data={"lbfast": ["*.pyx", "*.pxd", "*.pyi", "bpf_src/*.c", "bpf_src/*.h"],
                  "lbfast.l7": ["*.pyx", "*.pxd", "*.pyi"], "control.status": ["static/*"]},
    ext_modules=cythonize(extensions, language_level=3),
    python_requires=">=3.11",
    install_requires=[
        "click>=8.1",
        "orjson>=3.9",
        "pydantic>=2.6",
        "uvloop>=0.19",
        "pyroute2>=0.7",
        "httptools>=0.6",
        "cryptography>=41",
        "aiohttp>=3.9",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "hypothesis>=6",
            "scapy>=2.5",
            "trustme>=1.1",
            "pytest-benchmark>=4",
            "schemathesis>=3.19",
        ],
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["lbfast = control.cli:main"]},
)
