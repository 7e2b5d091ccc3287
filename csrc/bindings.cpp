// bindings.cpp — the only file that knows Python: exposes files, buffers and execute_plan as warpload._core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string_view>
#include <tuple>
#include <memory>
#include <string>
#include <vector>

#include "convert.h"
#include "crc32c.h"
#include "dequant.h"
#include "cuda.h"
#include "engine.h"
#include "errors.h"
#include "io.h"
#include "tfbundle.h"
#include "pickle_scan.h"
#include "thread_pool.h"
#include "writer.h"

namespace py = pybind11;
using namespace warpload;

namespace {

// Columns of one row of the int64 plan table built by python/warpload/engine/host.py: file,
// src_offset, src_nbytes, src_dtype, dst_region, dst_offset, dst_dtype, transpose_rows,
// transpose_cols, swap (the bytes of each unit to reverse: 0 for little-endian sources).
constexpr size_t kPlanColumns = 10;

std::vector<CopyOp> decode_plan(const py::buffer& table) {
    py::buffer_info info = table.request();
    // array('q') reports "q"; numpy's int64 reports "l" on LP64.
    if (info.itemsize != 8 || (info.format != "q" && info.format != "l")) {
        throw std::invalid_argument("plan table must be a buffer of int64");
    }
    if (info.size % kPlanColumns != 0) throw std::invalid_argument("plan table length is not a multiple of 10");
    const auto* row = static_cast<const int64_t*>(info.ptr);
    std::vector<CopyOp> ops(static_cast<size_t>(info.size) / kPlanColumns);
    for (auto& op : ops) {
        for (size_t column : {0, 1, 2, 4, 5, 7, 8, 9}) {
            if (row[column] < 0) throw CheckpointError("negative value in plan table");
        }
        if (row[0] > UINT32_MAX || row[4] > UINT32_MAX) throw CheckpointError("file or region index too large in plan table");
        if (!is_known_dtype(static_cast<int32_t>(row[3])) || !is_known_dtype(static_cast<int32_t>(row[6]))) {
            throw CheckpointError("unknown dtype code in plan table");
        }
        op.file = static_cast<uint32_t>(row[0]);
        op.src_offset = static_cast<uint64_t>(row[1]);
        op.src_nbytes = static_cast<uint64_t>(row[2]);
        op.src_dtype = static_cast<DType>(row[3]);
        op.region = static_cast<uint32_t>(row[4]);
        op.dst_offset = static_cast<uint64_t>(row[5]);
        op.dst_dtype = static_cast<DType>(row[6]);
        op.rows = static_cast<uint64_t>(row[7]);
        op.cols = static_cast<uint64_t>(row[8]);
        if (row[9] > 8) throw CheckpointError("byte-swap width too large in plan table");
        op.swap = static_cast<uint32_t>(row[9]);
        row += kPlanColumns;
    }
    return ops;
}

// One destination buffer exported for a call (the buffer protocol): while the export lasts its
// owner can neither free nor resize it. Released with the GIL held, after the call.
class HeldBuffer {
   public:
    HeldBuffer(const py::handle& object, size_t index) {
        if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
            std::string message = "destination region " + std::to_string(index) +
                                  " is not a writable, C-contiguous buffer (nor an (address, nbytes) pair)";
            py::raise_from(PyExc_TypeError, message.c_str());
            throw py::error_already_set();
        }
    }
    ~HeldBuffer() { PyBuffer_Release(&view_); }
    HeldBuffer(const HeldBuffer&) = delete;
    HeldBuffer& operator=(const HeldBuffer&) = delete;

    Region region() const { return {static_cast<uint8_t*>(view_.buf), static_cast<uint64_t>(view_.len)}; }

   private:
    Py_buffer view_{};
};

// A call's destination regions and the buffers exported for them.
struct Destinations {
    std::vector<Region> regions;
    std::vector<std::unique_ptr<HeldBuffer>> held;
};

// The regions of `items`: each a writable C-contiguous buffer (a HostBuffer, a numpy array, a
// bytearray), exported for the call, or an (address, nbytes) tuple of memory the caller keeps alive
// and that Python cannot export (device memory; buffers are refused where accept_buffers is false).
// `padded` lists the regions whose gaps are padding (Region::padded).
Destinations destinations_of(const py::sequence& items, const std::vector<size_t>& padded, bool accept_buffers) {
    Destinations out;
    out.regions.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
        py::object item = items[i];
        if (PyTuple_Check(item.ptr())) {
            // The C API rather than a generic cast: engine/host_fill.py passes one pair per parameter, thousands a call.
            if (PyTuple_GET_SIZE(item.ptr()) != 2) {
                throw py::type_error("destination region " + std::to_string(i) + " must be an (address, nbytes) tuple");
            }
            uint64_t address = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item.ptr(), 0));
            uint64_t nbytes = address == uint64_t(-1) && PyErr_Occurred()
                                  ? 0
                                  : PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item.ptr(), 1));
            if (PyErr_Occurred()) throw py::error_already_set();
            if ((address == 0 && nbytes > 0) || address + nbytes < address || address + nbytes > UINTPTR_MAX) {
                throw std::invalid_argument("destination region " + std::to_string(i) + " (" + std::to_string(address) +
                                            ", " + std::to_string(nbytes) + ") is not a range of memory");
            }
            out.regions.push_back({reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(address)), nbytes});
        } else if (accept_buffers) {
            out.held.push_back(std::make_unique<HeldBuffer>(item, i));
            out.regions.push_back(out.held.back()->region());
        } else {
            throw py::type_error("destination region " + std::to_string(i) + " must be an (address, nbytes) tuple");
        }
    }
    for (size_t index : padded) {
        if (index >= out.regions.size()) {
            throw std::invalid_argument("padded region " + std::to_string(index) + " of " +
                                        std::to_string(out.regions.size()));
        }
        out.regions[index].padded = true;
    }
    return out;
}

py::object text(const std::string& s) {
    return py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(s.data(), s.size(), "surrogateescape"));
}

py::object path_or_none(const std::string& path) {
    if (path.empty()) return py::none();
    return text(path);
}

py::object offset_or_none(uint64_t offset) {
    if (offset == kNoOffset) return py::none();
    return py::int_(offset);
}

// warpload.errors' classes, imported once and never released: a `static py::object` would be
// decref'd during static destruction, after the interpreter is gone (pybind11's
// gil_safe_call_once.h).
struct ErrorClasses {
    py::object checkpoint, bundle, destination, io, cuda, cuda_unavailable;
};

const ErrorClasses& error_classes() {
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<ErrorClasses> storage;
    return storage
        .call_once_and_store_result([] {
            py::module_ errors = py::module_::import("warpload.errors");
            return ErrorClasses{errors.attr("CheckpointError"), errors.attr("TensorBundleError"),
                                errors.attr("DestinationError"), errors.attr("EngineIOError"),
                                errors.attr("CudaError"), errors.attr("CudaUnavailableError")};
        })
        .get_stored();
}

void raise_instance(const py::object& cls, const py::object& exc) { PyErr_SetObject(cls.ptr(), exc.ptr()); }

// The core's exceptions as warpload.errors classes, with where they happened as attributes.
void translate_errors(std::exception_ptr caught) {
    const ErrorClasses& c = error_classes();
    try {
        if (caught) std::rethrow_exception(caught);
    } catch (const tfbundle::BundleError& err) {
        py::object key = err.key().empty() ? py::none() : text(err.key());
        raise_instance(c.bundle, c.bundle(text(err.what()), py::arg("path") = text(err.path()), py::arg("tensor") = key,
                                          py::arg("offset") = err.offset()));
    } catch (const CheckpointError& err) {
        raise_instance(c.checkpoint, c.checkpoint(text(err.what()), py::arg("path") = path_or_none(err.path()),
                                                  py::arg("offset") = offset_or_none(err.offset())));
    } catch (const DestinationError& err) {
        raise_instance(c.destination,
                       c.destination(text(err.what()), py::arg("row") = err.row(), py::arg("region") = err.region(),
                                     py::arg("offset") = err.offset(), py::arg("nbytes") = err.nbytes(),
                                     py::arg("region_size") = err.region_size(), py::arg("path") = text(err.path())));
    } catch (const IOError& err) {
        raise_instance(c.io, c.io(err.errno_value(), text(err.what()), py::arg("path") = path_or_none(err.path()),
                                  py::arg("offset") = offset_or_none(err.offset())));
    } catch (const CudaError& err) {
        raise_instance(c.cuda, c.cuda(text(err.what()), py::arg("code") = err.code()));
    } catch (const CudaUnavailableError& err) {
        PyErr_SetString(c.cuda_unavailable.ptr(), err.what());
    }
}

// TensorFlow tensor bundles (python/warpload/formats/tf_bundle.py): plain tuples, bytes keys.
void bind_tfbundle(py::module_& m) {
    m.def(
        "tf_bundle_index",
        [](const std::string& path) {
            tfbundle::Index index;
            {
                py::gil_scoped_release release;
                index = tfbundle::read_index(path);
            }
            const tfbundle::Header& h = index.header;
            py::tuple header = py::make_tuple(h.num_shards, h.endianness, h.producer, h.min_consumer, h.bad_consumers);
            py::list entries;
            for (const tfbundle::Entry& e : index.entries) {
                entries.append(py::make_tuple(py::bytes(e.key), e.dtype, py::tuple(py::cast(e.shape)), e.shard_id,
                                              e.offset, e.size, e.crc32c, e.slices));
            }
            return py::make_tuple(header, entries);
        },
        py::arg("path"),
        "(header (num_shards, endianness, producer, min_consumer, bad_consumers), entries (key, dtype, shape, "
        "shard_id, offset, size, masked crc32c, slices)); shapes, shards and ranges already checked.");
    m.def(
        "tf_bundle_strings",
        [](const py::bytes& data, uint64_t count, uint32_t masked_crc, const std::string& path, const py::bytes& key,
           uint64_t offset) {
            std::string_view view(data);
            std::vector<std::string> strings = tfbundle::decode_strings(reinterpret_cast<const uint8_t*>(view.data()),
                                                                        view.size(), count, masked_crc, path,
                                                                        std::string(key), offset);
            py::list out;
            for (const std::string& s : strings) out.append(py::bytes(s));
            return out;
        },
        py::arg("data"), py::arg("count"), py::arg("masked_crc"), py::arg("path"), py::arg("key"), py::arg("offset"),
        "Decodes a stored DT_STRING tensor of count elements, checking its CRCs; path, key and offset label errors.");
    m.def(
        "tf_bundle_first_bad_checksum",
        [](const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<std::tuple<uint32_t, uint64_t, uint64_t, uint32_t>>& rows,
           size_t num_threads) {
            std::vector<tfbundle::ChecksumJob> jobs;
            jobs.reserve(rows.size());
            for (const auto& [file, offset, nbytes, crc] : rows) jobs.push_back({file, offset, nbytes, crc});
            py::gil_scoped_release release;
            return tfbundle::first_checksum_mismatch(files, jobs, num_threads);
        },
        py::arg("files"), py::arg("jobs"), py::arg("num_threads") = 0,
        "Index of the first (file, offset, nbytes, masked crc32c) job whose bytes do not match, or -1.");
    m.def(
        "crc32c",
        [](const py::buffer& data, std::optional<bool> hardware, uint32_t value) {
            py::buffer_info info = data.request();
            const auto* bytes = static_cast<const uint8_t*>(info.ptr);
            size_t n = static_cast<size_t>(info.size * info.itemsize);
            py::gil_scoped_release release;
            if (!hardware) return crc32c_extend(value, bytes, n);
            return *hardware ? crc32c_hardware(value, bytes, n) : crc32c_portable(value, bytes, n);
        },
        py::arg("data"), py::arg("hardware") = py::none(), py::arg("value") = 0,
        "CRC-32C of a buffer (unmasked), continuing from value; hardware=True/False forces SSE4.2/table.");
    m.def("crc32c_has_hardware", &crc32c_has_hardware, "Whether this CPU has the SSE4.2 crc32 instruction.");
}

// The pieces of a write: the header bytes at offset 0, then one per row of an unsigned 64-bit table
// (address, nbytes, offset) built by python/warpload/engine/writer.py from tensors it checked.
std::vector<WritePiece> write_pieces(const py::buffer& header, const py::buffer& table) {
    py::buffer_info head = header.request();
    py::buffer_info info = table.request();
    if (info.itemsize != 8 || (info.format != "Q" && info.format != "L")) {
        throw std::invalid_argument("write table must be a buffer of uint64");
    }
    if (info.size % 3 != 0) throw std::invalid_argument("write table length is not a multiple of 3");
    std::vector<WritePiece> pieces;
    pieces.reserve(static_cast<size_t>(info.size) / 3 + 1);
    pieces.push_back({static_cast<const uint8_t*>(head.ptr), static_cast<uint64_t>(head.size * head.itemsize), 0});
    const auto* row = static_cast<const uint64_t*>(info.ptr);
    for (py::ssize_t i = 0; i < info.size; i += 3, row += 3) {
        if (row[0] > UINTPTR_MAX || row[0] + row[1] < row[0]) {
            throw std::invalid_argument("write table row " + std::to_string(i / 3) + " is not a range of memory");
        }
        pieces.push_back({reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(row[0])), row[1], row[2]});
    }
    return pieces;
}

WriteOptions write_options(int method, size_t num_threads, size_t chunk_bytes) {
    if (method < 0 || method > 2) throw std::invalid_argument("method must be 0 (pwrite), 1 (sequential) or 2 (mmap)");
    WriteOptions options;
    options.method = static_cast<WriteMethod>(method);
    options.num_threads = num_threads;
    if (chunk_bytes > 0) options.chunk_bytes = chunk_bytes;
    return options;
}

void bind_writer(py::module_& m) {
    m.def(
        "write_file",
        [](const std::string& path, const py::buffer& header, const py::buffer& table, uint64_t total, int method,
           size_t num_threads, size_t chunk_bytes) {
            std::vector<WritePiece> pieces = write_pieces(header, table);
            WriteOptions options = write_options(method, num_threads, chunk_bytes);
            py::gil_scoped_release release;
            write_pieces_to_file(path, pieces, total, options);
        },
        py::arg("path"), py::arg("header"), py::arg("table"), py::arg("total"), py::kw_only(), py::arg("method") = 0,
        py::arg("num_threads") = 0, py::arg("chunk_bytes") = 0,
        "Writes header then the (address, nbytes, offset) rows of a uint64 table into a new file of total bytes, "
        "in parallel; the rows must tile the file after the header.");
    m.def(
        "write_bytes",
        [](const py::buffer& header, const py::buffer& table, uint64_t total, size_t num_threads) {
            std::vector<WritePiece> pieces = write_pieces(header, table);
            WriteOptions options = write_options(0, num_threads, 0);
            check_pieces(pieces, total);
            auto out = py::reinterpret_steal<py::bytes>(PyBytes_FromStringAndSize(nullptr, static_cast<py::ssize_t>(total)));
            if (!out) throw py::error_already_set();
            auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out.ptr()));
            {
                py::gil_scoped_release release;
                write_pieces_to_memory(dst, pieces, total, options);
            }
            return out;
        },
        py::arg("header"), py::arg("table"), py::arg("total"), py::kw_only(), py::arg("num_threads") = 0,
        "The bytes write_file would write, as a bytes object filled in parallel.");
}

const char* scan_status_name(PickleScanStatus status) {
    switch (status) {
        case PickleScanStatus::kComplete: return "complete";
        case PickleScanStatus::kTruncated: return "truncated";
        case PickleScanStatus::kForbiddenOpcode: return "forbidden opcode";
        case PickleScanStatus::kMissingOperand: return "missing operand";
        case PickleScanStatus::kMemoIndexTooLarge: return "memo index too large";
        case PickleScanStatus::kTuplesTooDeep: return "tuples too deep";
        case PickleScanStatus::kMarksTooDeep: return "marks too deep";
    }
    return "unknown";
}

void check_in_file(const MappedFile& file, uint64_t offset, uint64_t nbytes) {
    uint64_t end = offset + nbytes;
    if (end < offset || end > file.size()) {
        throw CheckpointError(file.path() + ": cannot read " + std::to_string(nbytes) + " bytes at offset " +
                                  std::to_string(offset) + ", the file has " + std::to_string(file.size()),
                              file.path(), offset);
    }
}

ReadMethod read_method(int method) {
    if (method < 0 || method > 2) throw std::invalid_argument("method must be 0 (auto), 1 (mmap) or 2 (pread)");
    return static_cast<ReadMethod>(method);
}

// A buffer of zero bytes still needs a non-null address for the buffer protocol.
uint8_t empty_buffer_byte = 0;

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "warpload's C++ engine: mapped files, huge-page buffers, parallel plan execution.";

    error_classes();  // imported now, so a broken warpload.errors fails the import, not a later error
    py::register_exception_translator(&translate_errors);

    py::class_<MappedFile, std::shared_ptr<MappedFile>>(m, "File", py::buffer_protocol())
        .def(py::init<const std::string&>(), py::arg("path"))
        .def_property_readonly("path", &MappedFile::path)
        .def_property_readonly("size", &MappedFile::size)
        .def(
            "read",
            [](const MappedFile& file, uint64_t offset, uint64_t nbytes) {
                check_in_file(file, offset, nbytes);
                return py::bytes(reinterpret_cast<const char*>(file.data() + offset), nbytes);
            },
            py::arg("offset"), py::arg("nbytes"), "Bytes [offset, offset+nbytes) of the file, bounds-checked.")
        .def(
            "read_spans",
            [](const MappedFile& file, const std::vector<uint64_t>& offsets, uint64_t nbytes) {
                for (uint64_t offset : offsets) check_in_file(file, offset, nbytes);
                std::string out(offsets.size() * nbytes, '\0');
                {
                    py::gil_scoped_release release;
                    for (size_t i = 0; i < offsets.size(); ++i) file.read_into(out.data() + i * nbytes, offsets[i], nbytes);
                }
                return py::bytes(out);
            },
            py::arg("offsets"), py::arg("nbytes"),
            "nbytes at each offset, read with pread (not through the mapping) and concatenated, bounds-checked.")
        .def(
            "resident_fraction", [](const MappedFile& file) { return file.resident_fraction(0, file.size()); },
            "Fraction of the file's pages in the page cache.")
        .def_buffer([](MappedFile& file) {
            uint8_t* data = file.data() != nullptr ? file.data() : &empty_buffer_byte;
            return py::buffer_info(data, 1, py::format_descriptor<uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(file.size())}, {1}, /*readonly=*/false);
        });

    py::class_<Progress, std::shared_ptr<Progress>>(
        m, "Progress", "Bytes a running execute / cuda_execute / prefault has finished; read it from another thread.")
        .def(py::init<>())
        .def_property_readonly("bytes", &Progress::bytes);

    py::class_<HostBuffer, std::shared_ptr<HostBuffer>>(m, "HostBuffer", py::buffer_protocol())
        .def(py::init<size_t, bool>(), py::arg("nbytes"), py::arg("huge_pages") = false)
        .def_property_readonly("size", &HostBuffer::size)
        .def_buffer([](HostBuffer& buf) {
            uint8_t* data = buf.data() != nullptr ? buf.data() : &empty_buffer_byte;
            return py::buffer_info(data, 1, py::format_descriptor<uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(buf.size())}, {1}, /*readonly=*/false);
        });

    m.def(
        "execute",
        [](const std::vector<std::shared_ptr<MappedFile>>& files, const py::buffer& table, const py::sequence& regions,
           double warm_fraction, uint64_t coalesce_gap, const std::vector<size_t>& padded, int method,
           size_t num_threads, size_t chunk_bytes, bool huge_pages, bool populate,
           const std::shared_ptr<Progress>& progress) {
            std::vector<CopyOp> ops = decode_plan(table);
            Destinations destinations = destinations_of(regions, padded, true);
            ExecuteOptions options;
            options.method = read_method(method);
            options.warm_fraction = warm_fraction;
            options.coalesce_gap = coalesce_gap;
            options.num_threads = num_threads;
            if (chunk_bytes > 0) options.chunk_bytes = chunk_bytes;
            options.huge_pages = huge_pages;
            options.populate = populate;
            options.progress = progress.get();
            ExecuteStats stats;
            {
                py::gil_scoped_release release;
                stats = execute_plan(files, destinations.regions, std::move(ops), options);
            }
            py::dict out;
            out["copies"] = stats.copies;
            out["bytes"] = stats.bytes;
            return out;
        },
        py::arg("files"), py::arg("table"), py::arg("regions"), py::kw_only(), py::arg("warm_fraction"),
        py::arg("coalesce_gap"), py::arg("padded") = std::vector<size_t>(), py::arg("method") = 0,
        py::arg("num_threads") = 0, py::arg("chunk_bytes") = 0, py::arg("huge_pages") = false,
        py::arg("populate") = true, py::arg("progress") = nullptr,
        "Runs a plan table (rows: file, src_offset, src_nbytes, src_dtype, dst_region, dst_offset, dst_dtype, "
        "transpose_rows, transpose_cols; 0, 0 for a plain copy; swap: 2/4/8 byte-reverses big-endian units, 0 none) into regions (writable buffers or (address, "
        "nbytes) pairs), every row checked first; returns {'copies', 'bytes'} after coalescing.");

    m.def(
        "convert_buffer",
        [](const py::buffer& src, int src_dtype, int dst_dtype) {
            if (!is_known_dtype(src_dtype) || !is_known_dtype(dst_dtype)) throw std::invalid_argument("unknown dtype code");
            py::buffer_info info = src.request();
            auto from = static_cast<DType>(src_dtype);
            auto to = static_cast<DType>(dst_dtype);
            size_t nbytes = static_cast<size_t>(info.size * info.itemsize);
            if (nbytes % itemsize(from) != 0) throw std::invalid_argument("source is not a whole number of elements");
            size_t count = nbytes / itemsize(from);
            std::string out(count * itemsize(to), '\0');
            {
                py::gil_scoped_release release;
                convert(info.ptr, from, out.data(), to, count);
            }
            return py::bytes(out);
        },
        py::arg("src"), py::arg("src_dtype"), py::arg("dst_dtype"), "Converts a whole buffer; for tests.");

    m.def(
        "cuda_runtime",
        [](const std::vector<std::string>& candidates) {
            py::gil_scoped_release release;
            const CudaRuntime& runtime = load_cuda_runtime(candidates);
            return std::make_pair(runtime.path, cuda_device_count(runtime));
        },
        py::arg("candidates"), "(path, device count) of the first CUDA runtime of candidates that loads.");

    m.def(
        "cuda_execute",
        [](const std::vector<std::string>& candidates, const std::vector<std::shared_ptr<MappedFile>>& files,
           const py::buffer& table, const py::sequence& regions, int device, size_t buffer_bytes, size_t num_buffers,
           size_t num_streams, double warm_fraction, uint64_t coalesce_gap, const std::vector<size_t>& padded,
           size_t num_threads, int method, const std::shared_ptr<Progress>& progress) {
            std::vector<CopyOp> ops = decode_plan(table);
            Destinations destinations = destinations_of(regions, padded, false);
            CudaOptions options;
            options.device = device;
            options.buffer_bytes = buffer_bytes;
            options.num_buffers = num_buffers;
            options.num_streams = num_streams;
            options.num_threads = num_threads;
            options.method = read_method(method);
            options.warm_fraction = warm_fraction;
            options.coalesce_gap = coalesce_gap;
            options.progress = progress.get();
            CudaStats stats;
            {
                py::gil_scoped_release release;
                stats = execute_plan_cuda(load_cuda_runtime(candidates), files, destinations.regions, std::move(ops),
                                          options);
            }
            py::dict out;
            out["bytes"] = stats.bytes;
            out["batches"] = stats.batches;
            out["copies"] = stats.copies;
            out["reads"] = stats.reads;
            out["pinned_bytes"] = stats.pinned_bytes;
            out["mmap_files"] = stats.mmap_files;
            out["pread_files"] = stats.pread_files;
            return out;
        },
        py::arg("runtime_candidates"), py::arg("files"), py::arg("table"), py::arg("regions"), py::arg("device"),
        py::arg("buffer_bytes"), py::arg("num_buffers"), py::arg("num_streams"), py::kw_only(),
        py::arg("warm_fraction"), py::arg("coalesce_gap"), py::arg("padded") = std::vector<size_t>(),
        py::arg("num_threads") = 0, py::arg("method") = 0, py::arg("progress") = nullptr,
        "Runs a plan table of raw copies into device regions ((address, nbytes) pairs) through a ring of pinned "
        "buffers, every row checked first; returns counters.");
    bind_tfbundle(m);
    bind_writer(m);

    m.def(
        "scan_pickle",
        [](const py::buffer& data, int max_nesting) {
            py::buffer_info info = data.request();
            if (info.ndim != 1 || info.itemsize != 1) throw std::invalid_argument("scan_pickle takes a bytes-like object");
            const auto* bytes = static_cast<const uint8_t*>(info.ptr);
            PickleScan scan;
            {
                py::gil_scoped_release release;
                scan = scan_pickle(bytes, static_cast<size_t>(info.size), max_nesting);
            }
            py::list globals;
            for (const PickleGlobal& global : scan.globals) {
                globals.append(py::make_tuple(
                    global.offset,
                    py::bytes(reinterpret_cast<const char*>(bytes + global.module_begin), global.module_end - global.module_begin),
                    py::bytes(reinterpret_cast<const char*>(bytes + global.name_begin), global.name_end - global.name_begin)));
            }
            return py::make_tuple(scan_status_name(scan.status), scan.position, scan.memo_index, globals);
        },
        py::arg("data"), py::arg("max_nesting"),
        "Checks a weights-only pickle without running it: (status, position, memo index, [(offset, module, "
        "name) of each GLOBAL before position]). Status 'complete' gives the length as position.");
    m.def(
        "weights_only_opcodes",
        []() {
            std::vector<uint8_t> codes = weights_only_opcodes();
            return py::bytes(reinterpret_cast<const char*>(codes.data()), codes.size());
        },
        "The pickle opcodes scan_pickle accepts, as bytes.");

    m.def("evict_from_page_cache", &evict_from_page_cache, py::arg("path"),
          py::call_guard<py::gil_scoped_release>(), "Drops a file's pages from the page cache.");
    m.def(
        "prefault",
        [](const std::vector<std::shared_ptr<MappedFile>>& files,
           const std::vector<std::tuple<uint32_t, uint64_t, uint64_t>>& rows, size_t num_threads, bool use_madvise,
           const std::shared_ptr<Progress>& progress) {
            std::vector<FileRange> ranges;
            ranges.reserve(rows.size());
            for (const auto& [file, offset, nbytes] : rows) ranges.push_back({file, offset, nbytes});
            py::gil_scoped_release release;
            return prefault_ranges(files, ranges, num_threads, use_madvise, progress.get());
        },
        py::arg("files"), py::arg("ranges"), py::arg("num_threads") = 0, py::arg("use_madvise") = true,
        py::arg("progress") = nullptr,
        "Maps every page of the (file, offset, nbytes) ranges of the files' mappings in parallel, reading them "
        "when cold; True when MADV_POPULATE_READ did it, False when pages were touched one by one.");
    m.def(
        "dequantize_fp8",
        [](const py::sequence& matrices, size_t num_threads) {
            // Each item: (weights buffer, float32 scales buffer, rows, cols, scale_rows, scale_cols,
            // weight dtype code, (dst address, dst nbytes), dst dtype code). Buffers stay exported for the call.
            std::vector<Fp8Matrix> jobs;
            std::vector<py::buffer_info> held;
            held.reserve(2 * matrices.size());
            for (size_t i = 0; i < matrices.size(); ++i) {
                py::tuple item = matrices[i].cast<py::tuple>();
                if (item.size() != 9) throw py::type_error("fp8 matrix " + std::to_string(i) + " must be a 9-tuple");
                held.push_back(item[0].cast<py::buffer>().request());
                const py::buffer_info& weights = held.back();
                held.push_back(item[1].cast<py::buffer>().request());
                const py::buffer_info& scales = held.back();
                if (scales.itemsize != 4 || scales.format != "f") {
                    throw std::invalid_argument("fp8 matrix " + std::to_string(i) + ": scales must be float32");
                }
                auto destination = item[7].cast<std::pair<uint64_t, uint64_t>>();
                int weight_dtype = item[6].cast<int>(), dst_dtype = item[8].cast<int>();
                if (!is_known_dtype(weight_dtype) || !is_known_dtype(dst_dtype)) {
                    throw std::invalid_argument("unknown dtype code");
                }
                Fp8Matrix job;
                job.weight = static_cast<const uint8_t*>(weights.ptr);
                job.weight_nbytes = static_cast<uint64_t>(weights.size * weights.itemsize);
                job.scales = static_cast<const float*>(scales.ptr);
                job.num_scales = static_cast<uint64_t>(scales.size);
                job.rows = item[2].cast<uint64_t>();
                job.cols = item[3].cast<uint64_t>();
                job.scale_rows = item[4].cast<uint64_t>();
                job.scale_cols = item[5].cast<uint64_t>();
                job.weight_dtype = static_cast<DType>(weight_dtype);
                job.dst = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(destination.first));
                job.dst_nbytes = destination.second;
                job.dst_dtype = static_cast<DType>(dst_dtype);
                jobs.push_back(job);
            }
            py::gil_scoped_release release;
            dequantize_fp8(jobs, num_threads);
        },
        py::arg("matrices"), py::kw_only(), py::arg("num_threads") = 0,
        "Dequantizes block-scaled FP8 matrices into (address, nbytes) destinations: float32(w) * scale, rounded "
        "once to the destination dtype, on the thread pool; every matrix is checked before any byte is written.");

    m.def("available_cores", &available_cores, "Cores this process may run on.");
}
